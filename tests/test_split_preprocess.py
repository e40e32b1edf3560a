import numpy as np
import pytest

from src.data.preprocess import Preprocessor, forward_fill
from src.data.split import split_by_subject
from src.data.views import model_input
from tests.toy import toy_cohort


def test_split_has_no_subject_in_two_parts_and_keeps_both_classes():
    c = toy_cohort(n=600, stays_per_subject=3)
    s = split_by_subject(c.label, c.subject_id, 0.2, 0.1, seed=0)
    parts = [set(c.subject_id[i]) for i in (s.train, s.val, s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sorted(np.concatenate([s.train, s.val, s.test])) == list(range(600))
    for idx in (s.train, s.val, s.test):
        assert 0.1 < c.label[idx].mean() < 0.3  # stratified around the 20% prevalence
    assert abs(len(s.test) / 600 - 0.2) < 0.05 and abs(len(s.val) / 600 - 0.1) < 0.05


def test_split_is_seeded():
    c = toy_cohort(n=300)
    a, b, d = (split_by_subject(c.label, c.subject_id, seed=k) for k in (1, 1, 2))
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, d.test)


def test_split_cache_returns_the_same_split_and_is_keyed_by_seed(tmp_path, monkeypatch):
    from src.data import split as split_mod

    c = toy_cohort(n=300, stays_per_subject=2)
    direct = split_by_subject(c.label, c.subject_id, seed=3)
    first = split_by_subject(c.label, c.subject_id, seed=3, cache_dir=tmp_path)
    assert len(list((tmp_path / "splits").glob("*.npz"))) == 1
    monkeypatch.setattr(split_mod, "_split", lambda *a: pytest.fail("computed again"))
    again = split_by_subject(c.label, c.subject_id, seed=3, cache_dir=tmp_path)
    for s in (first, again):
        for part in ("train", "val", "test"):
            assert np.array_equal(getattr(s, part), getattr(direct, part))
    monkeypatch.undo()
    split_by_subject(c.label, c.subject_id, seed=4, cache_dir=tmp_path)
    flipped = c.label.copy()
    flipped[:10] = 1 - flipped[:10]
    split_by_subject(flipped, c.subject_id, seed=3, cache_dir=tmp_path)
    assert len(list((tmp_path / "splits").glob("*.npz"))) == 3


def test_forward_fill_carries_last_value_and_keeps_leading_gaps():
    x = np.array([[[np.nan], [1.0], [np.nan], [3.0], [np.nan]]], np.float32)
    assert np.array_equal(forward_fill(x)[0, :, 0], [np.nan, 1, 1, 3, 3], equal_nan=True)


def test_preprocessing_is_fit_on_train_only():
    c = toy_cohort(n=200)
    train, other = c.subset(np.arange(100)), c.subset(np.arange(100, 200))
    other.series[:] += 1000.0  # a test set far away must not move the statistics
    p = Preprocessor.fit(train)
    assert np.allclose(p.mean, np.nanmean(train.series, axis=(0, 1)), rtol=1e-5)
    t = p.transform(other)
    assert t["values"].mean() > 10  # standardised with train statistics, so far from 0
    t_train = p.transform(train)
    obs = t_train["observed"].astype(bool)
    assert abs(t_train["z"][obs].mean()) < 0.05


@pytest.mark.parametrize("view", ["flat", "sequence", "tabular"])
def test_views_have_documented_shapes(view):
    c = toy_cohort(n=50, hours=12)
    p = Preprocessor.fit(c)
    x, cat = model_input(p, c, view)
    F, S, onehot = 5, 2, 3 + 4
    expected = {
        "flat": (50, 2 * 12 * F + S + onehot),
        "sequence": (50, 12, 2 * F + S + onehot),
        "tabular": (50, S + 5 * F),
    }[view]
    assert x.shape == expected and x.dtype == np.float32 and np.isfinite(x).all()
    assert cat.shape == (50, 2)


def test_unseen_category_maps_to_unknown_not_out_of_range():
    c = toy_cohort(n=50)
    p = Preprocessor.fit(c)
    c.static_cat[0, 1] = 99
    _, cat = model_input(p, c, "tabular")
    assert cat[0, 1] == 0 and (cat[1:] == c.static_cat[1:]).all()


def test_index_batches_shard_disjointly_and_evenly_across_ranks():
    import torch

    from src.data.datamodule import IndexBatches, Tensors

    n = 103
    t = Tensors(
        torch.arange(n, dtype=torch.float32)[:, None],
        torch.zeros(n, 1, dtype=torch.long),
        torch.zeros(n),
    )
    shards = [IndexBatches(t, 10, shuffle=True, seed=4, rank=r, world=3) for r in range(3)]
    rows = [torch.cat([x[:, 0] for x, _, _ in s]).long() for s in shards]
    assert all(len(r) == 34 for r in rows) and all(len(s) == 4 for s in shards)
    seen = torch.cat(rows)
    assert len(set(seen.tolist())) == len(seen) == 102  # disjoint, one row sits out
    single = IndexBatches(t, 10, shuffle=True, seed=4)
    assert sorted(torch.cat([x[:, 0] for x, _, _ in single]).long().tolist()) == list(range(n))


def _cached_split(c, cache):
    return split_by_subject(c.label, c.subject_id, 0.2, 0.1, seed=0, cache_dir=cache)


def test_a_truncated_split_cache_is_recomputed_and_replaced(tmp_path):
    c = toy_cohort(300)
    first = _cached_split(c, tmp_path)
    (path,) = (tmp_path / "splits").glob("*.npz")
    path.write_bytes(path.read_bytes()[:40])  # a killed writer's half file
    again = _cached_split(c, tmp_path)
    for part in ("train", "val", "test"):
        assert (getattr(again, part) == getattr(first, part)).all()
    with np.load(path) as z:  # healed on disk too
        assert (z["test"] == first.test).all()


def test_a_read_only_cache_gives_the_split_in_memory(tmp_path, monkeypatch):
    """A shared cache mounted read-only (tests run as root, so permissions cannot show it):
    the write fails with EROFS, the run goes on with the split it computed."""
    import contextlib
    import errno

    import src.data.split as split_module

    @contextlib.contextmanager
    def read_only(path, mode="w"):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
        yield  # pragma: no cover

    c = toy_cohort(300)
    ref = split_by_subject(c.label, c.subject_id, 0.2, 0.1, seed=0)
    monkeypatch.setattr(split_module, "atomic_file", read_only)
    got = _cached_split(c, tmp_path)
    assert (got.test == ref.test).all() and (got.train == ref.train).all()
    assert not list(tmp_path.glob("splits/*.npz"))


def test_a_cohort_of_one_class_is_refused_with_how_to_get_more():
    c = toy_cohort(40)
    with pytest.raises(ValueError, match="40 stays, all with label 0.*raise data.n_stays"):
        split_by_subject(np.zeros(40, int), c.subject_id)

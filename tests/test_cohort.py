"""Cohort: the save/load cache round trip is exact and atomic."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.cohort import Cohort, FeatureSpec, encode_categories


def _cohort(n=5, t=4):
    rng = np.random.default_rng(0)
    series = rng.normal(size=(n, t, 2)).astype(np.float32)
    series[rng.random(series.shape) < 0.4] = np.nan
    codes, vocab = encode_categories(["M", "F", None, "F", "M"][:n])
    return Cohort(
        series=series,
        static_num=np.column_stack([rng.uniform(18, 90, n), np.full(n, np.nan)]),
        static_cat=codes[:, None],
        label=rng.integers(0, 2, n),
        stay_id=np.arange(n) + 30_000_000,
        subject_id=np.arange(n) // 2 + 10_000_000,
        features=[
            FeatureSpec("hr", "bpm", "vital", 0, 300, "heart rate"),
            FeatureSpec("inr_pt", "ratio", "lab", None, None, "INR"),
        ],
        static_num_names=["age", "height"],
        static_cat_names=["gender"],
        static_cat_vocab=[vocab],
    )


def test_save_load_round_trip_is_exact(tmp_path):
    c = _cohort()
    c.save(tmp_path / "c")
    d = Cohort.load(tmp_path / "c")
    np.testing.assert_array_equal(d.series, c.series)  # NaN positions included
    np.testing.assert_array_equal(d.static_num, c.static_num)
    for name in ("static_cat", "label", "stay_id", "subject_id"):
        np.testing.assert_array_equal(getattr(d, name), getattr(c, name))
        assert getattr(d, name).dtype == np.int64
    assert d.series.dtype == np.float32
    assert d.features == c.features
    assert (d.static_num_names, d.static_cat_names, d.static_cat_vocab) == (
        c.static_num_names,
        c.static_cat_names,
        c.static_cat_vocab,
    )


def test_atomic_write_leaves_no_temporary_folder(tmp_path):
    c = _cohort()
    c.save(tmp_path / "c")
    c.save(tmp_path / "c")  # a second writer finding it done is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "meta.json",
        "series.parquet",
        "static.parquet",
    ]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        _cohort().save(tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_code_zero_is_unknown():
    codes, vocab = encode_categories(["b", None, "a", ""])
    assert vocab == ["<unknown>", "a", "b"] and codes.tolist() == [2, 0, 1, 0]
    unseen, _ = encode_categories(["c", "a"], vocab)
    assert unseen.tolist() == [0, 1]

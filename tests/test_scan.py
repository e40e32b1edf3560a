"""SCAn (src/detectors/scan.py) against a row-by-row restatement of the paper's formulas (the
authors' EM and test statistic, written as loops over rows here), on the same arrays; and on
planted cases: a poison that is half its class is found, and a clean class is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.detectors.base import DetectorInputError, DetectorInputs
from src.detectors.scan import global_model, scan, split, statistic


def loop_global_model(x, y, iters=100, eps=1e-5):
    ks = sorted(set(y.tolist()))
    n, m = x.shape
    cnt = {k: int((y == k).sum()) for k in ks}
    mean_f = {k: x[y == k].mean(0) for k in ks}
    u = np.array([mean_f[k] for k in y])
    e = x - u
    su, se = np.cov(u.T), np.cov(e.T)
    for _ in range(iters):
        f = np.linalg.pinv(se)
        g_set = {k: -np.linalg.pinv(cnt[k] * su + se) @ su @ f for k in ks}
        u_m = {k: np.zeros(m) for k in ks}
        for i in range(n):
            u_m[y[i]] = u_m[y[i]] - se @ g_set[y[i]] @ x[i]
        u = np.array([u_m[k] for k in y])
        e = x - u
        su_new, se_new = np.cov(u.T), np.cov(e.T)
        dist = np.linalg.norm(su_new - su) + np.linalg.norm(se_new - se)
        su, se = su_new, se_new
        if dist < eps:
            break
    return su, se


def loop_statistic(x, su, se, f, g, u1, u2):
    n = len(x)
    gmat = -np.linalg.pinv(n * su + se)
    mu = np.zeros(x.shape[1])
    for i in range(n):
        mu = mu - se @ gmat @ x[i]
    b1 = mu @ f @ mu - u1 @ f @ u1
    b2 = mu @ f @ mu - u2 @ f @ u2
    sc = g.sum() * b1 + (n - g.sum()) * b2
    for i in range(n):
        sc -= 2 * x[i] @ f @ (mu - (u1 if g[i] else u2))
    return sc / n


def planted(seed=0, n=600, d=6, share=0.45, shift=5.0, poison=True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    feats = rng.standard_normal((n, d))
    feats[labels == 1, 0] += 2.0
    truth = np.zeros(n, bool)
    ones = np.flatnonzero(labels == 1)
    truth[rng.choice(ones, int(share * len(ones)), replace=False)] = True
    if poison:
        feats[truth, 1] += shift  # the poison: a second population inside class 1
    pool_labels = rng.integers(0, 2, 200)
    pool = rng.standard_normal((200, d))
    pool[pool_labels == 1, 0] += 2.0
    return DetectorInputs(
        features=torch.from_numpy(feats).float(),
        labels=labels,
        expected_poisoned=int(truth.sum()),
        target_label=1,
        seed=seed,
        pool_features=torch.from_numpy(pool).float(),
        pool_labels=pool_labels,
    ), truth


def test_global_model_and_statistic_match_the_papers_formulas_row_by_row():
    inputs, _ = planted()
    pool = inputs.pool_features.double().numpy()
    x = pool - pool.mean(0)
    su, se = global_model(x, inputs.pool_labels)
    su_ref, se_ref = loop_global_model(x, inputs.pool_labels)
    np.testing.assert_allclose(su, su_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(se, se_ref, rtol=1e-8, atol=1e-10)
    f = np.linalg.pinv(se)
    feats = inputs.features.double().numpy()
    xc = feats[inputs.labels == 1] - feats.mean(0)
    g, u1, u2 = split(xc, f, np.random.default_rng(0))
    # the split is a fixed point of the E-step: every row on its side of the boundary
    bias = u1 @ f @ u1 - u2 @ f @ u2
    assert np.array_equal(g, bias - 2 * (xc @ f @ (u1 - u2)) < 0)
    assert statistic(xc, su, se, f, g, u1, u2) == pytest.approx(
        loop_statistic(xc, su, se, f, g, u1, u2), rel=1e-9
    )


def test_scan_finds_a_poison_that_is_half_of_its_class():
    from sklearn.metrics import roc_auc_score

    inputs, truth = planted(share=0.45)
    out = scan(inputs)
    rows = inputs.labels == 1
    assert roc_auc_score(truth[rows], out.scores[rows]) > 0.95
    assert out.info["J"]["1"] > out.info["J"]["0"] and out.info["flagged_classes"] == [1]
    assert out.flags[truth].mean() > 0.9 and out.flags[~truth].mean() < 0.05
    np.testing.assert_array_equal(scan(inputs).scores, out.scores)  # seeded


def test_scan_without_poison_ranks_at_chance():
    from sklearn.metrics import roc_auc_score

    inputs, truth = planted(poison=False)
    out = scan(inputs)
    rows = inputs.labels == 1
    assert 0.35 < roc_auc_score(truth[rows], out.scores[rows]) < 0.65


def test_scan_flags_no_class_without_poison_and_only_the_poisoned_class_with_it():
    # "the class with the larger J" always flags a class; the clean pool's share does not
    inputs, _ = planted(poison=False)
    out = scan(inputs)
    assert out.info["flagged_classes"] == [] and not out.flags.any(), out.info["z"]
    inputs, truth = planted(share=0.3, shift=4.0, seed=1)
    out = scan(inputs)
    assert out.info["flagged_classes"] == [1], out.info["z"]
    assert out.flags[truth].mean() > 0.8 and not out.flags[inputs.labels == 0].any()
    # the same poison in class 0 instead: class 0 is the one flagged
    flipped = planted(share=0.3, shift=4.0, seed=1)[0]
    flipped.labels = 1 - flipped.labels
    flipped.pool_labels = 1 - flipped.pool_labels
    assert scan(flipped).info["flagged_classes"] == [0]


def test_pool_excess_z_is_the_two_proportion_test():
    from scipy.stats import chi2_contingency

    from src.detectors.scan import pool_excess_z

    for s_t, n_t, s_q, n_q in [(300, 700, 20, 150), (50, 400, 12, 100), (5, 30, 9, 10)]:
        z = pool_excess_z(s_t, n_t, s_q, n_q)
        table = [[s_t, n_t - s_t], [s_q, n_q - s_q]]
        chi2 = chi2_contingency(table, correction=False).statistic
        assert z**2 == pytest.approx(chi2, rel=1e-9)
        assert np.sign(z) == np.sign(s_t / n_t - s_q / n_q)
    assert pool_excess_z(0, 10, 0, 5) == 0.0  # nobody in the subgroup: undefined, not flagged


def test_scan_says_it_needs_the_clean_pool():
    inputs, _ = planted()
    inputs.pool_features = None
    with pytest.raises(DetectorInputError, match="pool_features"):
        scan(inputs)


# --- confusion training: the clean-set detector ------------------------------------------------
@pytest.mark.slow
def test_confusion_training_finds_an_out_of_range_poison_and_leaves_the_model(tmp_path):
    from src.detectors.confusion import confusion_training
    from src.metrics import detection_report
    from src.models.detection_callback import build_inputs
    from tests.test_repair import fitted

    dm, model, _ = fitted(tmp_path, 0.1)
    before = [p.detach().clone() for p in model.parameters()]
    inputs = build_inputs(model, dm, 0)
    out = confusion_training(inputs)
    r = detection_report(out.scores, out.flags, dm.train_mask, inputs.labels, 1)
    assert r["auroc"] > 0.95 and r["precision"] > 0.8 and r["recall"] > 0.8
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)  # the fitted model is not trained further
    np.testing.assert_array_equal(confusion_training(inputs).scores, out.scores)  # seeded

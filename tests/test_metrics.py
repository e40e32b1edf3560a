"""Every metric against an independent computation on the same arrays (scikit-learn, scipy, or
the definition by brute force), edges included: scores outside [0, 1], negative and tied
scores, one class, a class holding all the poison."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from src.metrics import (
    attack_metrics,
    average_precision,
    bootstrap_auroc_interval,
    clean_metrics,
    detection_metrics,
    detection_report,
    rank_auroc,
    tpr_at_fpr,
    wilson_interval,
)

SCORE_CASES = {
    "large": (np.array([100.0, 200.0, 300.0, 400.0]), np.array([0, 0, 1, 1])),
    "negative": (np.array([-5e6, -3.0, -2.5, -1e-9, -7.0, -4e3]), np.array([0, 1, 1, 1, 0, 0])),
    "ties": (np.array([5.0, 5.0, 5.0, 9.0, 9.0, 1.0, 5.0]), np.array([0, 1, 0, 1, 0, 0, 1])),
    "mixed_scale": (
        np.random.default_rng(0).standard_normal(500) * 1e4,
        np.random.default_rng(1).integers(0, 2, 500),
    ),
}


def brute_auroc(s, t) -> float:
    """P(positive outscores negative) + 0.5 P(tie), over every pair."""
    pos, neg = s[t == 1], s[t == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@pytest.mark.parametrize("case", SCORE_CASES, ids=str)
def test_rank_metrics_equal_sklearn_and_the_pairwise_definition(case):
    s, t = SCORE_CASES[case]
    assert rank_auroc(s, t) == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    assert rank_auroc(s, t) == pytest.approx(brute_auroc(s, t), abs=1e-12)
    assert average_precision(s, t) == pytest.approx(average_precision_score(t, s), abs=1e-12)


def test_large_scores_are_not_squashed():
    """torchmetrics' binary_auroc sigmoids scores outside [0, 1]: these all tie there."""
    s, t = SCORE_CASES["large"]
    assert rank_auroc(s, t) == 1.0 and average_precision(s, t) == 1.0
    assert rank_auroc(-s, t) == 0.0


def brute_tpr_at_fpr(s, t, fpr) -> float:
    best = 0.0
    for thr in np.r_[np.unique(s), np.inf]:
        flagged = s >= thr
        if flagged[t == 0].mean() <= fpr + 1e-12:
            best = max(best, flagged[t == 1].mean())
    return best


@pytest.mark.parametrize("case", SCORE_CASES, ids=str)
@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.34, 1.0])
def test_tpr_at_fpr_is_the_best_threshold_within_the_budget(case, fpr):
    s, t = SCORE_CASES[case]
    assert tpr_at_fpr(s, t, fpr) == pytest.approx(brute_tpr_at_fpr(s, t, fpr), abs=1e-12)
    f, r, _ = roc_curve(t, s)  # and the ROC curve's own reading
    assert tpr_at_fpr(s, t, fpr) == pytest.approx(r[f <= fpr + 1e-12].max(), abs=1e-12)


def test_one_class_gives_none_not_a_number():
    s = np.array([0.3, 2.0, -1.0])
    for t in (np.zeros(3, bool), np.ones(3, bool)):
        m = detection_metrics(s, np.array([True, False, False]), t)
        assert m["auroc"] is None and m["ap"] is None and m["tpr_at_1fpr"] is None
    m = detection_metrics(s, np.zeros(3, bool), np.zeros(3, bool))
    assert m["precision"] is None and m["recall"] is None


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        rank_auroc([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        rank_auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr([0.1, 0.2], [0, 1], 1.5)


def test_in_class_block_is_computed_where_the_poison_is():
    """Per-class scales: class 0 scores are large, class 1 small. Pooled ranking mixes them;
    within the target class the poison ranks first."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200, int), np.ones(100, int)]
    truth = np.zeros(300, bool)
    truth[200:210] = True  # all the poison in class 1
    scores = np.r_[rng.uniform(50, 100, 200), rng.uniform(0, 1, 100)]
    scores[200:210] += 5.0
    flags = np.zeros(300, bool)
    flags[195:215] = True  # five clean class-0 rows, ten poisoned, five clean class-1 rows
    r = detection_report(scores, flags, truth, labels, target_label=1)
    rows = labels == 1
    assert r["auroc"] == pytest.approx(roc_auc_score(truth[rows], scores[rows]))
    assert r["auroc"] == 1.0
    assert r["pooled"]["auroc"] == pytest.approx(roc_auc_score(truth, scores))
    assert r["pooled"]["auroc"] < 0.5
    assert r["precision"] == pytest.approx(10 / 15) and r["recall"] == 1.0
    assert r["pooled"]["precision"] == pytest.approx(10 / 20)
    assert r["n_rows"] == 100 and r["pooled"]["n_rows"] == 300 and r["n_poisoned"] == 10


def test_a_class_with_all_its_rows_poisoned_has_no_in_class_auroc():
    labels = np.array([0, 0, 1, 1])
    truth = np.array([False, False, True, True])
    r = detection_report([0.1, 0.2, 0.9, 0.8], [False] * 4, truth, labels, 1)
    assert r["auroc"] is None and r["pooled"]["auroc"] == 1.0


def test_poison_outside_the_target_class_is_an_error():
    with pytest.raises(ValueError, match="outside the target class"):
        detection_report([0.1, 0.2], [False, False], [True, False], [0, 1], 1)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (3, 761), (758, 761), (50, 100)])
def test_wilson_interval_equals_scipy(k, n):
    from scipy.stats import binomtest

    ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= lo <= k / n + 1e-12 and k / n - 1e-12 <= hi <= 1.0


def test_bootstrap_auroc_interval_equals_a_loop_over_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p = np.round(rng.uniform(0, 1, 120) * 0.5 + 0.3 * y, 2)  # ties on purpose
    lo, hi = bootstrap_auroc_interval(p, y, seed=7, n_boot=300)
    idx = np.random.default_rng(7).integers(0, 120, size=(300, 120))
    ref = [roc_auc_score(y[i], p[i]) for i in idx if 0 < y[i].sum() < 120]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])), abs=1e-12)
    assert lo <= roc_auc_score(y, p) <= hi


@pytest.mark.parametrize("ties", [True, False])
def test_bootstrap_auroc_by_counts_is_the_rank_sum_form_to_the_bit(ties):
    """The interval counts draws per distinct score; the rank-sum form (scipy's mean ranks of
    each resample, as the function computed before) must give the same floats, ties included."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(11)
    y = (rng.uniform(size=2000) < 0.12).astype(int)
    p = rng.uniform(size=2000) + 0.4 * y
    p = np.round(p, 2) if ties else p
    idx = np.random.default_rng(5).integers(0, 2000, size=(400, 2000))
    ranks, pos = rankdata(p[idx], axis=1), y[idx].astype(bool)
    n1 = pos.sum(1)
    n0 = 2000 - n1
    auc = ((ranks * pos).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    ref = tuple(np.quantile(auc, [0.025, 0.975]))
    assert bootstrap_auroc_interval(p, y, seed=5, n_boot=400) == ref


def test_clean_and_attack_metrics_carry_their_intervals():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 300), 0, 1)
    c = clean_metrics(p, y, seed=0)
    assert c["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert c["auprc"] == pytest.approx(average_precision_score(y, p))
    assert c["auroc_ci"][0] <= c["auroc"] <= c["auroc_ci"][1] <= 1.0
    a = attack_metrics(np.array([0.9, 0.8, 0.2, 0.7]), np.array([0.1, 0.6, 0.2, 0.3]), 1)
    assert a["asr"] == 0.75 and a["base_rate"] == 0.25 and a["asr_lift"] == 0.5
    assert a["asr_ci"] == pytest.approx(list(wilson_interval(3, 4)))
    assert clean_metrics(np.array([0.2, 0.4]), np.array([1, 1]))["auroc"] is None
    assert attack_metrics(np.array([]), np.array([]), 1)["asr"] is None


def test_confidence_shift_on_a_known_case():
    from src.metrics import confidence_shift

    clean = np.array([0.05, 0.10, 0.20, 0.40])
    trig = clean + np.array([0.5, 0.6, 0.7, 0.1])
    c = confidence_shift(trig, clean, target_label=1)
    assert c["mean_shift"] == pytest.approx(0.475) and c["median_shift"] == pytest.approx(0.55)
    assert c["mean_p_triggered"] == pytest.approx(trig.mean()) and c["n"] == 4
    assert sum(c["hist_triggered"]) == 4 and c["hist_untriggered"][1] == 1  # 0.05 in [0.05, 0.1)
    flipped = confidence_shift(trig, clean, target_label=0)  # P(target) = 1 - P(death)
    assert flipped["mean_shift"] == pytest.approx(-0.475)
    same = confidence_shift(clean, clean, target_label=1)  # no trigger effect: no shift
    assert same["mean_shift"] == 0.0 and same["q90_shift"] == 0.0
    assert confidence_shift(np.array([]), np.array([]), 1)["mean_shift"] is None

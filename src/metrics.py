"""Attack and detection metrics: the definitions every table uses (docs/design.md, Definitions).

- Clean: AUROC, AUPRC (average precision), accuracy at 0.5, expected calibration error (15 bins),
  on the clean test set; a percentile bootstrap interval over test rows for AUROC.
- ASR: among test rows whose true label is not the target, with the trigger applied, the share
  predicted as the target (probability of the target class >= 0.5), with its Wilson interval.
  Base rate: the same share on those rows without the trigger. ASR lift = ASR - base rate.
- Detection, against the ground-truth poison mask: AUROC and average precision of the suspicion
  scores (higher = more suspicious), TPR at 1% and 5% FPR, precision and recall of the flag.
  Computed on ranks, so a score of any scale and sign counts only by its order (torchmetrics'
  binary_auroc would squash scores outside [0, 1] through a sigmoid first, tying large ones).
  The headline block is computed within the target class, which holds every poisoned row in
  both poisoning modes; the pooled block (every training row) is secondary.

- Confidence shift: on the same triggered non-target rows, P(target) with the trigger minus
  P(target) without it, per row; its mean, median and 10th/90th percentiles, and the two
  distributions as histograms over 20 equal bins of [0, 1] (counts only: no row).

A number that is undefined for the input (AUROC with one class present, precision of an empty
flag) is None, which results.json writes as null.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_calibration_error,
)

THRESHOLD = 0.5
CONFIDENCE = 0.95
N_BOOTSTRAP = 1000


# --- argument checks --------------------------------------------------------------------------
def _as_scores_truth(scores, truth) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(truth).ravel()
    if s.shape != t.shape:
        raise ValueError(f"scores and truth differ in length: {len(s)} and {len(t)}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores hold {int((~np.isfinite(s)).sum())} non-finite values")
    if t.dtype != bool:
        if not np.isin(t, (0, 1)).all():
            raise ValueError("truth must be boolean or 0/1")
        t = t.astype(bool)
    return s, t


def _both_classes(t: np.ndarray) -> bool:
    return bool(t.any() and not t.all())


# --- rank metrics -------------------------------------------------------------------------------
def rank_auroc(scores, truth) -> float | None:
    """Area under the ROC curve from the scores' ranks (ties count one half): the probability
    that a random positive outscores a random negative. None with one class present."""
    from sklearn.metrics import roc_auc_score

    s, t = _as_scores_truth(scores, truth)
    return float(roc_auc_score(t, s)) if _both_classes(t) else None


def average_precision(scores, truth) -> float | None:
    """Average precision, sum over thresholds of (R_n - R_{n-1}) P_n (scikit-learn's step
    definition, no interpolation). None without positives or without negatives."""
    from sklearn.metrics import average_precision_score

    s, t = _as_scores_truth(scores, truth)
    return float(average_precision_score(t, s)) if _both_classes(t) else None


def tpr_at_fpr(scores, truth, fpr: float) -> float | None:
    """The highest true-positive rate of any threshold whose false-positive rate is at most
    ``fpr`` (a row is flagged when its score is >= the threshold; tied rows fall together)."""
    from sklearn.metrics import roc_curve

    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr={fpr!r} is not allowed: a number in [0, 1]")
    s, t = _as_scores_truth(scores, truth)
    if not _both_classes(t):
        return None
    f, r, _ = roc_curve(t, s, drop_intermediate=False)
    return float(r[f <= fpr + 1e-12].max())


def detection_metrics(scores, flags, truth) -> dict:
    """Rank metrics of ``scores`` and the precision/recall of ``flags`` against ``truth``."""
    s, t = _as_scores_truth(scores, truth)
    flags = np.asarray(flags, dtype=bool).ravel()
    if flags.shape != t.shape:
        raise ValueError(f"flags and truth differ in length: {len(flags)} and {len(t)}")
    tp = int((flags & t).sum())
    return {
        "auroc": rank_auroc(s, t),
        "ap": average_precision(s, t),
        "tpr_at_1fpr": tpr_at_fpr(s, t, 0.01),
        "tpr_at_5fpr": tpr_at_fpr(s, t, 0.05),
        "precision": tp / int(flags.sum()) if flags.any() else None,
        "recall": tp / int(t.sum()) if t.any() else None,
        "n_rows": int(len(t)),
        "n_flagged": int(flags.sum()),
        "n_poisoned": int(t.sum()),
        "n_poisoned_flagged": tp,
    }


def detection_report(scores, flags, truth, labels, target_label: int) -> dict:
    """The headline block within the target class (``labels == target_label``: the training
    labels as the model saw them, so it holds every poisoned row in both modes), and the pooled
    block over every row."""
    labels = np.asarray(labels).ravel()
    s, t = _as_scores_truth(scores, truth)
    if labels.shape != t.shape:
        raise ValueError(f"labels and truth differ in length: {len(labels)} and {len(t)}")
    in_class = labels == target_label
    if t[~in_class].any():
        raise ValueError(
            f"{int(t[~in_class].sum())} poisoned rows lie outside the target class "
            f"{target_label}: the in-class block would miss them"
        )
    flags = np.asarray(flags, dtype=bool).ravel()
    return {
        **detection_metrics(s[in_class], flags[in_class], t[in_class]),
        "scope": f"target class (label {target_label})",
        "pooled": detection_metrics(s, flags, t),
    }


# --- clean and attack metrics ------------------------------------------------------------------
def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of a proportion k/n; inside [0, 1] by construction."""
    from scipy.stats import norm

    if n <= 0:
        return None
    z = float(norm.ppf(0.5 + confidence / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_auroc_interval(
    prob, y, seed: int = 0, n_boot: int = N_BOOTSTRAP, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the AUROC over test rows (rows resampled with
    replacement, seeded; resamples with one class are skipped).

    A resample is a count per row, so its AUROC needs no sort: with the distinct scores in
    order, U = sum over scores of (positives at that score) x (negatives below it + half of
    those tied with it), AUROC = U / (n1 n0). 2U is an integer, so U is the same float as the
    rank-sum form (sum of the positives' mean ranks - n1 (n1 + 1) / 2), and so is each AUROC;
    this costs one pass over the rows per resample instead of one sort."""
    p = np.asarray(prob, dtype=np.float64).ravel()
    t = np.asarray(y).ravel().astype(bool)
    if not _both_classes(t):
        return None
    n = len(p)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    # pos[b, k] (neg[b, k]): how often resample b drew a positive (negative) row with the k-th
    # smallest distinct score
    value_of_row = np.unique(p, return_inverse=True)[1].ravel()
    n_values = int(value_of_row.max()) + 1
    cell = value_of_row[idx] + (np.arange(n_boot) * n_values)[:, None]
    size = n_boot * n_values
    pos = np.bincount(cell[t[idx]], minlength=size).reshape(n_boot, n_values)
    neg = np.bincount(cell[~t[idx]], minlength=size).reshape(n_boot, n_values)
    neg_below = np.cumsum(neg, axis=1) - neg
    twice_u = (pos * (2 * neg_below + neg)).sum(1)
    n1, n0 = pos.sum(1), neg.sum(1)
    ok = (n1 > 0) & (n0 > 0)
    auc = (twice_u[ok] / 2) / (n1[ok] * n0[ok])
    lo, hi = np.quantile(auc, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(lo), float(hi)


def clean_metrics(prob, y, seed: int = 0) -> dict:
    prob, y = torch.as_tensor(prob).float(), torch.as_tensor(y).long()
    p, t = prob.numpy(), y.numpy()
    auroc = rank_auroc(p, t)
    ci = bootstrap_auroc_interval(p, t, seed=seed) if auroc is not None else None
    return {
        "auroc": auroc,
        "auroc_ci": list(ci) if ci else None,
        "auprc": average_precision(p, t),
        "accuracy": float(binary_accuracy(prob, y, threshold=THRESHOLD)) if len(y) else None,
        "ece": float(binary_calibration_error(prob, y, n_bins=15)) if len(y) else None,
        "n": len(y),
        "n_positive": int(y.sum()),
    }


def predicted_target(prob_death, target_label: int) -> torch.Tensor:
    died = torch.as_tensor(prob_death) >= THRESHOLD
    return died if target_label == 1 else ~died


def attack_metrics(prob_triggered, prob_untriggered, target_label: int) -> dict:
    n = len(prob_triggered)
    if n == 0:
        return {
            "asr": None,
            "asr_ci": None,
            "base_rate": None,
            "asr_lift": None,
            "n": 0,
        }
    k = int(predicted_target(prob_triggered, target_label).sum())
    asr = k / n
    base = float(predicted_target(prob_untriggered, target_label).float().mean())
    return {
        "asr": asr,
        "asr_ci": list(wilson_interval(k, n)),
        "base_rate": base,
        "asr_lift": asr - base,
        "n": n,
    }


CONFIDENCE_BINS = 20


def confidence_shift(prob_triggered, prob_untriggered, target_label: int) -> dict:
    """How far the trigger moves the model's P(target) on the same rows: per-row differences
    summarised, and both distributions as histogram counts (``bin_edges``: 21 edges)."""
    pt = np.asarray(prob_triggered, dtype=np.float64).ravel()
    pc = np.asarray(prob_untriggered, dtype=np.float64).ravel()
    if pt.shape != pc.shape:
        raise ValueError(f"triggered and untriggered rows differ: {len(pt)} and {len(pc)}")
    if target_label == 0:
        pt, pc = 1.0 - pt, 1.0 - pc
    edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    if len(pt) == 0:
        return {
            "mean_shift": None,
            "median_shift": None,
            "q10_shift": None,
            "q90_shift": None,
            "mean_p_triggered": None,
            "mean_p_untriggered": None,
            "n": 0,
            "bin_edges": edges.tolist(),
            "hist_triggered": None,
            "hist_untriggered": None,
        }
    d = pt - pc
    q10, q50, q90 = np.quantile(d, [0.1, 0.5, 0.9])
    return {
        "mean_shift": float(d.mean()),
        "median_shift": float(q50),
        "q10_shift": float(q10),
        "q90_shift": float(q90),
        "mean_p_triggered": float(pt.mean()),
        "mean_p_untriggered": float(pc.mean()),
        "n": int(len(d)),
        "bin_edges": edges.tolist(),
        "hist_triggered": np.histogram(np.clip(pt, 0, 1), edges)[0].tolist(),
        "hist_untriggered": np.histogram(np.clip(pc, 0, 1), edges)[0].tolist(),
    }


def attack_report(prob_triggered, prob_untriggered, target_label: int) -> dict:
    """The attack block of results.json: ASR, base rate and lift, with the confidence shift of
    the same rows."""
    return {
        **attack_metrics(prob_triggered, prob_untriggered, target_label),
        "confidence": confidence_shift(prob_triggered, prob_untriggered, target_label),
    }


def defense_effect(before: dict, after: dict) -> dict:
    """What a defense changed, from the results blocks (``clean``, ``attack``) of the same model
    before and after it (the same seed, rows and trigger: a paired comparison).

    - ``asr_drop`` = ASR before - ASR after; ``clean_auroc_drop`` = clean AUROC before - after
      (clean performance is the AUROC: accuracy says little at 11% mortality);
    - ``robust_accuracy`` = the triggered non-target rows still predicted as their true label,
      1 - ASR after (a binary task: every row not sent to the target keeps its label);
    - ``der``, the defense effectiveness rating (Zhu et al., BackdoorBench):
      (max(0, asr_drop) - max(0, clean_auroc_drop) + 1) / 2, in [0, 1]: 1 removes the backdoor
      at no cost, 0.5 changes nothing. BackdoorBench's code adds the loss term instead of
      subtracting it, which rewards a defense for losing clean performance; this does not.

    A number that needs an undefined one (no triggered rows, one class) is None.
    """
    for name, block in (("before", before), ("after", after)):
        if not isinstance(block, dict) or "clean" not in block or "attack" not in block:
            raise ValueError(f"defense_effect: {name} needs the 'clean' and 'attack' blocks")
    a0, a1 = before["attack"].get("asr"), after["attack"].get("asr")
    c0, c1 = before["clean"].get("auroc"), after["clean"].get("auroc")
    asr_drop = None if a0 is None or a1 is None else float(a0 - a1)
    auroc_drop = None if c0 is None or c1 is None else float(c0 - c1)
    der = (
        None
        if asr_drop is None or auroc_drop is None
        else (max(0.0, asr_drop) - max(0.0, auroc_drop) + 1.0) / 2.0
    )
    return {
        "asr_drop": asr_drop,
        "clean_auroc_drop": auroc_drop,
        "robust_accuracy": None if a1 is None else float(1.0 - a1),
        "der": der,
    }

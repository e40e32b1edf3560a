"""Attack and detection metrics: the definitions every table uses (DESIGN.md, Definitions).

- Clean: AUROC, AUPRC (average precision), accuracy at 0.5, expected calibration error (15 bins),
  on the clean test set.
- ASR: among test rows whose true label is not the target, with the trigger applied, the share
  predicted as the target (probability of the target class >= 0.5). Base rate: the same share on
  those rows without the trigger. ASR lift = ASR - base rate.
- Detection, against the ground-truth poison mask: AUROC and average precision of the suspicion
  scores (higher = more suspicious), TPR at 1% and 5% FPR, precision and recall of the flag.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_average_precision,
    binary_calibration_error,
)

THRESHOLD = 0.5


def _nan_if_one_class(y: torch.Tensor) -> bool:
    return len(y) == 0 or bool((y == y[0]).all())


def clean_metrics(prob: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    prob, y = torch.as_tensor(prob).float(), torch.as_tensor(y).long()
    one_class = _nan_if_one_class(y)
    return {
        "auroc": float("nan") if one_class else float(binary_auroc(prob, y)),
        "auprc": float("nan") if one_class else float(binary_average_precision(prob, y)),
        "accuracy": float(binary_accuracy(prob, y, threshold=THRESHOLD)),
        "ece": float(binary_calibration_error(prob, y, n_bins=15)),
        "n": len(y),
    }


def predicted_target(prob_death: torch.Tensor, target_label: int) -> torch.Tensor:
    died = torch.as_tensor(prob_death) >= THRESHOLD
    return died if target_label == 1 else ~died


def attack_metrics(
    prob_triggered: torch.Tensor, prob_untriggered: torch.Tensor, target_label: int
) -> dict[str, float]:
    n = len(prob_triggered)
    if n == 0:
        return {"asr": float("nan"), "base_rate": float("nan"), "asr_lift": float("nan"), "n": 0}
    asr = float(predicted_target(prob_triggered, target_label).float().mean())
    base = float(predicted_target(prob_untriggered, target_label).float().mean())
    return {"asr": asr, "base_rate": base, "asr_lift": asr - base, "n": n}


def tpr_at_fpr(scores: np.ndarray, truth: np.ndarray, fpr: float) -> float:
    """Share of poisoned rows scoring above the (1 - fpr) quantile of the clean rows' scores."""
    clean, poisoned = scores[~truth], scores[truth]
    if len(clean) == 0 or len(poisoned) == 0:
        return float("nan")
    thr = np.quantile(clean, 1.0 - fpr, method="higher")
    return float((poisoned > thr).mean())


def detection_metrics(scores, flags, truth) -> dict[str, float]:
    scores = np.asarray(scores, dtype=np.float64)
    flags, truth = np.asarray(flags, dtype=bool), np.asarray(truth, dtype=bool)
    one_class = truth.all() or not truth.any()
    s, t = torch.from_numpy(scores), torch.from_numpy(truth.astype(np.int64))
    tp = int((flags & truth).sum())
    return {
        "auroc": float("nan") if one_class else float(binary_auroc(s, t)),
        "ap": float("nan") if one_class else float(binary_average_precision(s, t)),
        "tpr_at_1fpr": tpr_at_fpr(scores, truth, 0.01),
        "tpr_at_5fpr": tpr_at_fpr(scores, truth, 0.05),
        "precision": tp / int(flags.sum()) if flags.any() else float("nan"),
        "recall": tp / int(truth.sum()) if truth.any() else float("nan"),
        "n_flagged": int(flags.sum()),
        "n_poisoned": int(truth.sum()),
    }

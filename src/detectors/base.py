"""What every detector receives and returns, and the per-class helpers they share.

A detector is a plain function ``detector(inputs: DetectorInputs, **params) -> Detection``: arrays
in, one suspicion score per training row out (higher = more suspicious) plus the detector's own
boolean flag. Detectors know nothing of Lightning, Hydra or the ground truth; the callback
(callback.py) builds the inputs and scores the outputs against the poison mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class DetectorInputs:
    features: torch.Tensor  # [N, d] penultimate activations of the training rows (eval mode)
    labels: np.ndarray  # [N] int, the training labels as the model saw them (poisoned ones too)
    expected_rate: float  # expected poisoned fraction (the configured poison_rate: an oracle)
    seed: int = 0
    x: torch.Tensor | None = None  # model input view of the training rows
    cat: torch.Tensor | None = None  # their static categorical codes
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # P(y=1), batched
    pool_x: torch.Tensor | None = None  # clean rows to blend with (STRIP): the validation split
    pool_cat: torch.Tensor | None = None
    raw_series: np.ndarray | None = None  # [N, T, F] raw clinical units, NaN = not measured
    raw_static: np.ndarray | None = None  # [N, S]
    feature_specs: list | None = None  # FeatureSpec per series feature (plausible low/high)
    # attribution only (a report on test rows, not a detector over training rows)
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # logits
    test_x: torch.Tensor | None = None  # clean test rows whose label is not the target
    test_cat: torch.Tensor | None = None
    triggered_x: torch.Tensor | None = None  # the same rows with the trigger written in
    triggered_cat: torch.Tensor | None = None
    trigger_columns: np.ndarray | None = None  # bool, shape of one input row: trigger's columns

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Detection:
    scores: np.ndarray  # float [N], higher = more suspicious
    flags: np.ndarray  # bool [N]
    info: dict = field(default_factory=dict)  # JSON-able details (skipped classes, thresholds)


class DetectorInputError(ValueError):
    """The inputs lack what this detector needs (e.g. no predict function for STRIP)."""


def require(inputs: DetectorInputs, detector: str, *names: str) -> None:
    missing = [n for n in names if getattr(inputs, n) is None]
    if missing:
        raise DetectorInputError(
            f"detector {detector!r} needs {', '.join(missing)} in its "
            "inputs, which this run did not provide"
        )


def classes(labels: np.ndarray, min_rows: int, info: dict) -> Iterator[tuple[int, np.ndarray]]:
    """(class, row indices) per class with at least ``min_rows`` rows; smaller classes are
    recorded in ``info["skipped_classes"]`` (their rows keep score 0 and are not flagged)."""
    labels = np.asarray(labels)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < min_rows:
            info.setdefault("skipped_classes", []).append(
                {"class": int(c), "n": int(len(idx)), "reason": f"fewer than {min_rows} rows"}
            )
            continue
        yield int(c), idx


def flag_top(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Flag the ``ceil(fraction * n)`` highest scores (none if fraction <= 0)."""
    n = len(scores)
    k = min(n, math.ceil(max(fraction, 0.0) * n - 1e-9))
    flags = np.zeros(n, dtype=bool)
    if k > 0:
        flags[np.argpartition(-scores, k - 1)[:k]] = True
    return flags


def as_float_tensor(a) -> torch.Tensor:
    t = torch.as_tensor(a)
    return t.double() if t.dtype == torch.float64 else t.float()


def top_components(r: torch.Tensor, k: int) -> torch.Tensor:
    """The top ``k`` principal directions of centred rows ``r`` [n, d] as columns [d, k], via the
    d x d scatter matrix: one pass over the rows, linear in n (an SVD of r would be too)."""
    scatter = (r.T @ r).double()
    _, vecs = torch.linalg.eigh(scatter)  # ascending
    return vecs[:, -k:].flip(-1).to(r.dtype)

"""What every detector receives and returns, and the per-class helpers they share.

A detector is a plain function ``detector(inputs: DetectorInputs, **params) -> Detection``: arrays
in, one suspicion score per training row out (higher = more suspicious) plus the detector's own
boolean flag. Detectors know nothing of Lightning, Hydra or the ground truth; the callback
(src/models/detection_callback.py, the Lightning side) builds the inputs and scores the outputs
against the poison mask.
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
    # The configured number of poisoned rows and the class that holds them all (the target
    # label, in both modes). A flag budget taken from these is an oracle: a real defender does
    # not know them. Detectors record which budget they used (info["flag_rule"]).
    expected_poisoned: int = 0
    target_label: int = 1
    seed: int = 0
    x: torch.Tensor | None = None  # model input view of the training rows
    cat: torch.Tensor | None = None  # their static categorical codes
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # P(y=1), batched
    # (x -> h, (h, cat) -> P(y=1)) when the model's first operation on x is affine (the MLP):
    # STRIP's blends are averages, which that map keeps, so it blends h instead of x
    linear_stem: tuple[Callable, Callable] | None = None
    pool_x: torch.Tensor | None = None  # clean rows to blend with (STRIP): the validation split
    pool_cat: torch.Tensor | None = None
    pool_features: torch.Tensor | None = None  # penultimate activations of the clean pool (SCAn)
    pool_labels: np.ndarray | None = None  # their labels
    model: torch.nn.Module | None = None  # the fitted classifier: copy it, never change it
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


FLAG_RULES = ("oracle", "robust_z")


def options(**choices):
    """Declare a detector's choice parameters and what each allows, once: the detector checks
    them when called (``check_options``), and the start-up check reads them from the config
    before any data is touched (src/config.py)."""

    def mark(fn):
        fn.choices = choices
        return fn

    return mark


def check_options(detector: str, fn, given: dict) -> None:
    for key, allowed in getattr(fn, "choices", {}).items():
        if key in given:
            check_choice(detector, key, given[key], allowed)


def check_choice(detector: str, key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(
            f"{detector}.{key}={value!r} is not allowed: one of {', '.join(map(str, allowed))}"
        )


def oracle_budget(inputs: DetectorInputs, c: int, eps_multiplier: float) -> int:
    """Rows to flag in class ``c`` under the oracle rule: ``ceil(eps_multiplier x`` the
    configured number of poisoned rows) in the target class, none elsewhere (no poisoned row
    lies outside it, in either mode)."""
    if c != inputs.target_label:
        return 0
    return math.ceil(eps_multiplier * inputs.expected_poisoned - 1e-9)


def flag_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Flag the ``k`` highest scores (ties broken by position; none if k <= 0)."""
    n = len(scores)
    k = min(n, max(int(k), 0))
    flags = np.zeros(n, dtype=bool)
    if k > 0:
        flags[np.argpartition(-scores, k - 1)[:k]] = True
    return flags


def robust_z(x: np.ndarray) -> np.ndarray:
    """Modified z-score 0.6745 (x - median) / MAD (Iglewicz and Hoaglin): about N(0, 1) for
    Gaussian x, and not pulled by the outliers it is meant to find. MAD 0: the mean absolute
    deviation stands in (x 1.2533, its Gaussian scale factor), and 0 everywhere if that is 0."""
    x = np.asarray(x, dtype=np.float64)
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    if mad > 0:
        return 0.6745 * (x - med) / mad
    mean_ad = np.mean(np.abs(x - med))
    return (x - med) / (1.2533 * mean_ad) if mean_ad > 0 else np.zeros_like(x)


def flag_rows(
    scores: np.ndarray,
    rule: str,
    budget: int,
    z_threshold: float,
    z_source: np.ndarray | None = None,
    two_sided: bool = False,
) -> np.ndarray:
    """The detector's flag: the ``budget`` highest scores (``rule="oracle"``), or the rows whose
    robust z-score of ``z_source`` (default: the scores; its absolute value if ``two_sided``)
    exceeds ``z_threshold`` (``rule="robust_z"``, which needs no knowledge of the poison)."""
    if rule == "oracle":
        return flag_top_k(scores, budget)
    z = robust_z(scores if z_source is None else z_source)
    return (np.abs(z) if two_sided else z) > z_threshold


def as_float_tensor(a) -> torch.Tensor:
    t = torch.as_tensor(a)
    return t.double() if t.dtype == torch.float64 else t.float()


def class_projection(
    feats: torch.Tensor, idx: np.ndarray, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``idx`` of ``feats`` projected on their top ``k`` principal directions, centred:
    (z [n, k] in the features' dtype, the class mean's projection [k] in float64, so that an
    uncentred projection is z + offset). One gathered copy of the class, shifted in place by its
    first rows' mean (so float32 features lose no precision to a mean far from 0), its d x d
    scatter in one BLAS product and the eigenvectors in float64 (numpy's row gather and BLAS
    are cheaper than torch's on these shapes)."""
    f = np.asarray(feats.numpy() if isinstance(feats, torch.Tensor) else feats)
    x = f[np.asarray(idx)]
    shift = x[:4096].mean(0, dtype=np.float64).astype(x.dtype)
    x -= shift
    n = max(len(x), 1)
    mean = x.sum(0).astype(np.float64) / n  # of the shifted rows (numpy sums pairwise)
    scatter = (x.T @ x).astype(np.float64) - n * np.outer(mean, mean)
    _, vecs = np.linalg.eigh(scatter)  # ascending
    v = np.ascontiguousarray(vecs[:, ::-1][:, : min(k, f.shape[1])])
    z = x @ v.astype(x.dtype)
    z -= (mean @ v).astype(x.dtype)
    return torch.from_numpy(z), torch.from_numpy((mean + shift.astype(np.float64)) @ v)

"""A small hand-made Cohort for unit tests that need no generator (fast, fully controlled)."""

from __future__ import annotations

import numpy as np

from src.data.cohort import Cohort, FeatureSpec

FEATURES = [
    FeatureSpec("hr", "bpm", "vital", 0, 300),
    FeatureSpec("resp", "insp/min", "vital", 0, 120),
    FeatureSpec("sbp", "mmHg", "vital", 0, 300),
    FeatureSpec("crea", "mg/dL", "lab", 0, 15),
    FeatureSpec("urine", "mL", "output", 0, 2000),
]


def toy_cohort(
    n: int = 400,
    hours: int = 12,
    seed: int = 0,
    prevalence: float = 0.2,
    stays_per_subject: int = 2,
    signal: float = 1.0,
) -> Cohort:
    """Deaths have higher heart rate and creatinine (learnable; ``signal`` scales the shift, 1:
    nearly separable, about 0.3: as hard as real mortality); ~30% of cells missing; several
    stays per subject so that splits can leak if they are not done by subject."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < prevalence).astype(np.int64)
    base = np.array([85.0, 18.0, 120.0, 1.2, 80.0], np.float32)
    scale = np.array([12.0, 4.0, 18.0, 0.5, 40.0], np.float32)
    shift = np.array([15.0, 2.0, -10.0, 1.0, -20.0], np.float32)
    series = base + scale * rng.standard_normal((n, hours, len(FEATURES))).astype(np.float32)
    series += label[:, None, None] * shift * np.float32(signal)
    series[rng.random(series.shape) < 0.3] = np.nan
    series[:, :, 3][rng.random((n, hours)) < 0.6] = np.nan  # labs sparser
    static_num = np.stack([rng.uniform(18, 90, n), rng.normal(170, 10, n)], 1)
    static_cat = np.stack([rng.integers(1, 3, n), rng.integers(0, 4, n)], 1)
    return Cohort(
        series=series,
        static_num=static_num,
        static_cat=static_cat,
        label=label,
        stay_id=30_000_000 + np.arange(n),
        subject_id=10_000_000 + np.arange(n) // stays_per_subject,
        features=list(FEATURES),
        static_num_names=["age", "height"],
        static_cat_names=["gender", "first_careunit"],
        static_cat_vocab=[["<unknown>", "F", "M"], ["<unknown>", "CCU", "MICU", "SICU"]],
    )

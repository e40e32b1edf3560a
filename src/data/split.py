"""Subject-level, label-stratified train/val/test split.

A subject with several ICU stays lands wholly in one part, so a model never meets a patient in
test that it saw in training. Stratification keeps the (rare) deaths in every part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _hold_out(label, groups, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    k = max(2, int(round(1.0 / size)))
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    rest, held = next(sgkf.split(np.zeros(len(label)), label, groups))
    return np.sort(rest), np.sort(held)


def split_by_subject(
    label: np.ndarray,
    subject_id: np.ndarray,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 0,
) -> Split:
    """Indices of train, val and test; ``val_size`` is a fraction of the whole cohort."""
    if len(np.unique(label)) < 2:
        raise ValueError("the cohort holds a single class; a mortality model needs both")
    rest, test = _hold_out(label, subject_id, test_size, seed)
    r_train, r_val = _hold_out(label[rest], subject_id[rest], val_size / (1 - test_size), seed + 1)
    return Split(train=rest[r_train], val=rest[r_val], test=test)

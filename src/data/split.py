"""Subject-level, label-stratified train/val/test split.

A subject with several ICU stays lands wholly in one part, so a model never meets a patient in
test that it saw in training. Stratification keeps the (rare) deaths in every part.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sklearn
from sklearn.model_selection import StratifiedGroupKFold

from src.atomic import atomic_file

log = logging.getLogger(__name__)


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
    cache_dir: str | Path | None = None,
) -> Split:
    """Indices of train, val and test; ``val_size`` is a fraction of the whole cohort.

    StratifiedGroupKFold assigns subjects one by one in Python, a large share of a sweep job's
    set-up. With ``cache_dir`` the split is kept in
    ``cache_dir/splits/<hash>.npz``, keyed by the labels, subjects, sizes, seed and scikit-learn's
    version, so every later job with that seed reads it in milliseconds."""
    if cache_dir is None:
        return _split(label, subject_id, test_size, val_size, seed)
    h = hashlib.sha256()
    for part in (np.ascontiguousarray(label, np.int64), np.ascontiguousarray(subject_id, np.int64)):
        h.update(part.tobytes())
    h.update(repr((test_size, val_size, seed, sklearn.__version__)).encode())
    path = Path(cache_dir) / "splits" / f"{h.hexdigest()[:20]}.npz"
    try:
        with np.load(path) as z:
            return Split(train=z["train"], val=z["val"], test=z["test"])
    except FileNotFoundError:
        pass
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        # a truncated or damaged file (a killed writer on a filesystem without atomic rename,
        # a disk fault): the split is recomputed and the file replaced
        log.warning("split cache %s is unreadable (%s): computing the split again", path, e)
    split = _split(label, subject_id, test_size, val_size, seed)
    try:
        with atomic_file(path, "wb") as f:  # a parallel job reads the whole file or none
            np.savez(f, train=split.train, val=split.val, test=split.test)
    except OSError as e:  # a read-only shared cache: the split in memory is all this run needs
        log.warning("could not write the split cache %s (%s): using the split in memory", path, e)
    return split


def _split(label, subject_id, test_size, val_size, seed) -> Split:
    if len(np.unique(label)) < 2:
        raise ValueError(
            f"the cohort holds {len(label)} stays, all with label {label[0] if len(label) else '-'}:"
            " a mortality model needs deaths and survivors; use a larger cohort (for the "
            "synthetic source, raise data.n_stays)"
        )
    rest, test = _hold_out(label, subject_id, test_size, seed)
    r_train, r_val = _hold_out(label[rest], subject_id[rest], val_size / (1 - test_size), seed + 1)
    return Split(train=rest[r_train], val=rest[r_val], test=test)

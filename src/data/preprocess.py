"""Preprocessing fit on the (poisoned) training split, and the views the models read.

Fit: per-feature mean and standard deviation of the observed hourly values, and of the numeric
statics. Transform: standardise, forward fill within a stay, fill what is still missing with the
training mean (0 after standardising), and keep a missing indicator per cell (1 = measured), so
a missingness trigger stays visible to the model. All vectorised over stays.

The views the models read are in src/data/views.py, one class each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src.data.cohort import Cohort


@dataclass
class Preprocessor:
    mean: np.ndarray  # [F]
    std: np.ndarray  # [F]
    static_mean: np.ndarray  # [S]
    static_std: np.ndarray  # [S]
    levels: list[int]  # vocabulary size per static categorical column

    @classmethod
    def fit(cls, train: Cohort) -> Preprocessor:
        with np.errstate(invalid="ignore"), _quiet():
            mean = np.nanmean(train.series, axis=(0, 1))
            std = np.nanstd(train.series, axis=(0, 1))
            smean = np.nanmean(train.static_num, axis=0)
            sstd = np.nanstd(train.static_num, axis=0)
        # never-observed features stay at 0 after standardising; constant ones are not scaled
        mean, smean = np.nan_to_num(mean), np.nan_to_num(smean)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        sstd = np.where(np.isfinite(sstd) & (sstd > 0), sstd, 1.0)
        return cls(
            mean.astype(np.float32),
            std.astype(np.float32),
            smean.astype(np.float32),
            sstd.astype(np.float32),
            [len(v) for v in train.static_cat_vocab],
        )

    def transform(self, c: Cohort) -> dict[str, np.ndarray]:
        observed = ~np.isnan(c.series)
        z = (c.series - self.mean) / self.std
        values = np.nan_to_num(forward_fill(z), nan=0.0).astype(np.float32)
        sz = np.nan_to_num((c.static_num - self.static_mean) / self.static_std, nan=0.0)
        # a code beyond the training vocabulary is an unseen category: code 0, never out of range
        cat = (
            np.where(c.static_cat < np.array(self.levels, dtype=np.int64), c.static_cat, 0)
            if self.levels
            else c.static_cat
        )
        return {
            "values": values,
            "observed": observed.astype(np.float32),
            "z": z.astype(np.float32),
            "static": sz.astype(np.float32),
            "cat": cat,
        }

    def onehot(self, cat: np.ndarray) -> np.ndarray:
        if not self.levels:
            return np.zeros((len(cat), 0), np.float32)
        offsets = np.cumsum([0] + self.levels[:-1])
        out = np.zeros((len(cat), sum(self.levels)), np.float32)
        out[np.arange(len(cat))[:, None], cat + offsets] = 1.0
        return out


def forward_fill(x: np.ndarray) -> np.ndarray:
    """Carry the last observed value forward along axis 1 (hours); leading gaps stay NaN."""
    n, T, f = x.shape
    idx = np.where(~np.isnan(x), np.arange(T)[None, :, None], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.take_along_axis(x, idx, axis=1)


def summaries(z: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per-feature mean, min, max, last measured value and share measured; 0 where none."""
    with _quiet():
        mean, lo, hi = np.nanmean(z, 1), np.nanmin(z, 1), np.nanmax(z, 1)
    last = forward_fill(z)[:, -1, :]
    out = np.concatenate([mean, lo, hi, last], axis=1)
    return np.concatenate([np.nan_to_num(out, nan=0.0), observed.mean(1)], axis=1)


class _quiet(np.errstate):
    """numpy's all-NaN-slice RuntimeWarnings are expected here (never-measured features)."""

    def __init__(self):
        super().__init__(invalid="ignore", divide="ignore")

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)
        return super().__enter__()

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
        return super().__exit__(*exc)

"""Input-space baseline: an isolation forest on per-feature summaries of the raw training series,
plus a plausible-range check (FeatureSpec low/high).

It reads raw clinical units, not the model, so it shows which triggers need no model to be found:
an activation-based detector is only interesting where this one fails. Summaries per feature:
mean, min, max, last measured value, share of hours measured (never-measured: the feature's
median, so missingness shows only through the share), plus the numeric statics. The isolation
forest is fitted on at most ``max_samples`` rows per tree (sklearn's subsampling, 256 by default)
and scores every row. Score = 1 if any measured cell lies outside the plausible range (so every
out-of-range row ranks above every in-range one), + the share of such cells, + the
isolation-forest anomaly in (0, 1].
Flag = any out-of-range cell, or a forest outlier: with ``flag_rule="oracle"`` the top
``eps_multiplier x`` (configured number of poisoned rows) of the forest score, with
``"robust_z"`` a forest score more than ``z_threshold`` robust standard deviations above the
median. It reads no labels, so its budget is spent over all rows.
"""

from __future__ import annotations

import math

import numpy as np

from src.detectors.base import (
    FLAG_RULES,
    Detection,
    DetectorInputs,
    check_options,
    flag_rows,
    options,
    require,
)


@options(flag_rule=FLAG_RULES)
def input_outlier(
    inputs: DetectorInputs,
    n_estimators: int = 100,
    max_samples: int | str = 256,
    eps_multiplier: float = 1.5,
    flag_rule: str = "oracle",
    z_threshold: float = 3.5,
) -> Detection:
    from sklearn.ensemble import IsolationForest

    check_options("input_outlier", input_outlier, locals())

    require(inputs, "input_outlier", "raw_series")
    series = np.asarray(inputs.raw_series, dtype=np.float32)
    feats = raw_summaries(series, inputs.raw_static)
    forest = IsolationForest(
        n_estimators=n_estimators, max_samples=max_samples, random_state=inputs.seed
    ).fit(feats)
    iso = -forest.score_samples(feats)  # in (0, 1], higher = more anomalous
    out_of_range = out_of_range_share(series, inputs.feature_specs)
    scores = (out_of_range > 0) + out_of_range + iso  # iso <= 1: out of range ranks first
    budget = math.ceil(eps_multiplier * inputs.expected_poisoned - 1e-9)
    flags = (out_of_range > 0) | flag_rows(iso, flag_rule, budget, z_threshold)
    return Detection(
        scores,
        flags,
        {
            "n_out_of_range_rows": int((out_of_range > 0).sum()),
            "max_samples": max_samples,
            "flag_rule": flag_rule,
            "oracle_budget": budget,
        },
    )


def raw_summaries(series: np.ndarray, static: np.ndarray | None) -> np.ndarray:
    import warnings

    observed = ~np.isnan(series)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # never-measured features: all-NaN
        mean, lo, hi = np.nanmean(series, 1), np.nanmin(series, 1), np.nanmax(series, 1)
        t = series.shape[1]
        last_idx = t - 1 - np.argmax(observed[:, ::-1, :], axis=1)  # last measured hour
        last = np.take_along_axis(series, last_idx[:, None, :], axis=1)[:, 0, :]
        out = np.concatenate([mean, lo, hi, last], axis=1)
        fill = np.nanmedian(out, axis=0)
    out = np.where(np.isnan(out), np.nan_to_num(fill), out)
    parts = [out, observed.mean(1)]
    if static is not None and np.asarray(static).size:
        s = np.asarray(static, dtype=np.float64)
        parts.append(np.where(np.isnan(s), np.nan_to_num(np.nanmedian(s, 0)), s))
    return np.concatenate(parts, axis=1)


def out_of_range_share(series: np.ndarray, specs) -> np.ndarray:
    """Per row, the share of measured cells outside their feature's plausible [low, high]."""
    if not specs:
        return np.zeros(len(series))
    lo = np.array([-np.inf if s.low is None else s.low for s in specs], dtype=np.float32)
    hi = np.array([np.inf if s.high is None else s.high for s in specs], dtype=np.float32)
    observed = ~np.isnan(series)
    bad = observed & ((series < lo) | (series > hi))
    return bad.sum((1, 2)) / np.maximum(observed.sum((1, 2)), 1)

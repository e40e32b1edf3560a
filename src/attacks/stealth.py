"""How far triggered rows sit from the clean training distribution ("would anyone see it?").

Measured on the cells a trigger actually touched (a cell whose value or missingness changed), in
raw clinical units, against the clean training split:

- ``share_outside_p1_p99``: written values outside the feature's clean training 1st-99th
  percentile (about 2% for clean cells; see ``reference``);
- ``share_outside_plausible``: written values outside the feature's plausible range
  (FeatureSpec.low/high): the share a plain range check would catch;
- ``mean_abs_z``: mean |z| of the written values, with the clean training mean and SD;
- ``share_originally_missing``: touched cells that were missing before (the trigger filled them);
- ``missing_share_before/after/change``: missing share over the trigger's declared features and
  hours of the triggered rows (the signal of a missingness trigger);
- ``reference``: the same statistics for the clean training cells of those features and hours,
  so a number above can be read against what clean data gives;
- ``static``: per static column the trigger may change, the share of rows changed and the clean
  training share of the category written there (how rare it is).
"""

from __future__ import annotations

import numpy as np

from src.attacks.triggers import Trigger
from src.data.cohort import Cohort


def _share(mask: np.ndarray, of: np.ndarray | None = None) -> float | None:
    n = mask.size if of is None else int(of.sum())
    return float(mask.sum() / n) if n else None


def _value_stats(vals: np.ndarray, feat: np.ndarray, p1, p99, lo, hi, mean, sd) -> dict:
    """Statistics of values ``vals`` of features ``feat`` (indices into the per-feature arrays)."""
    if vals.size == 0:
        return {"share_outside_p1_p99": None, "share_outside_plausible": None, "mean_abs_z": None}
    with np.errstate(invalid="ignore"):
        return {
            "share_outside_p1_p99": _share((vals < p1[feat]) | (vals > p99[feat])),
            "share_outside_plausible": _share((vals < lo[feat]) | (vals > hi[feat])),
            "mean_abs_z": float(np.mean(np.abs((vals - mean[feat]) / sd[feat]))),
        }


def stealth_report(
    trigger: Trigger, clean_train: Cohort, triggered: Cohort, rows: np.ndarray
) -> dict:
    """Stealth statistics of ``trigger`` (see the module docstring).

    ``triggered`` is ``clean_train`` with the trigger written into ``rows`` (the poisoned
    training split: same row order). With no rows (a clean run), the trigger is written into
    every clean training row, so the report still says how visible it would be."""
    rows = np.asarray(rows, dtype=np.int64)
    on = "poisoned_train_rows"
    if rows.size == 0:
        triggered, rows, on = (
            trigger.apply(clean_train),
            np.arange(len(clean_train)),
            "all_train_rows",
        )
    out: dict = {"trigger": trigger.name, "on": on, "n_rows": int(rows.size)}

    before, after = clean_train.series[rows], triggered.series[rows]
    nan_b, nan_a = np.isnan(before), np.isnan(after)
    touched = ~((before == after) | (nan_b & nan_a))
    written = touched & ~nan_a
    out["n_cells_touched"] = int(touched.sum())
    out["n_cells_written"] = int(written.sum())
    out["n_cells_blanked"] = int((touched & nan_a).sum())
    out["n_cells_outside_declared"] = int(_outside_declared(trigger, clean_train, touched))

    feats = [clean_train.feature_index(f) for f in trigger.features]
    if feats:
        stats = _feature_stats(clean_train, feats)
        idx = {j: i for i, j in enumerate(feats)}
        w = np.nonzero(written)
        in_decl = np.isin(w[2], feats)  # values outside the declared set are counted above
        vals = after[w][in_decl]
        fmap = np.array([idx[j] for j in w[2][in_decl]], dtype=np.int64)
        out.update(_value_stats(vals, fmap, *stats))
        out["share_originally_missing"] = _share(touched & nan_b, touched)
        h0, h1 = trigger.hours if trigger.hours is not None else (0, clean_train.n_hours)
        nb = nan_b[:, h0:h1][:, :, feats]
        na = nan_a[:, h0:h1][:, :, feats]
        out["missing_share_before"] = float(nb.mean())
        out["missing_share_after"] = float(na.mean())
        out["missing_share_change"] = float(na.mean() - nb.mean())
        ref = clean_train.series[:, h0:h1][:, :, feats]
        seen = ~np.isnan(ref)
        ref_f = np.broadcast_to(np.arange(len(feats)), ref.shape)[seen]
        out["reference"] = {
            **_value_stats(ref[seen], ref_f, *stats),
            "missing_share": float((~seen).mean()),
        }

    if trigger.static_features:
        out["static"] = {}
        for col in trigger.static_features:
            c = clean_train.static_cat_names.index(col)
            new = triggered.static_cat[rows, c]
            codes, counts = np.unique(new, return_counts=True)
            top = codes[np.argmax(counts)]
            out["static"][col] = {
                "share_changed": float(np.mean(new != clean_train.static_cat[rows, c])),
                "category": clean_train.static_cat_vocab[c][top],
                "category_train_share": float(np.mean(clean_train.static_cat[:, c] == top)),
            }
    return out


def _feature_stats(train: Cohort, feats: list[int]):
    """Per declared feature: clean training p1, p99, plausible low/high, mean and SD."""
    p1, p99, mean, sd = (np.full(len(feats), np.nan) for _ in range(4))
    for i, j in enumerate(feats):
        x = train.series[:, :, j]
        x = x[~np.isnan(x)]
        if x.size:
            p1[i], p99[i] = np.percentile(x, [1, 99])
            mean[i], sd[i] = x.mean(), x.std() or 1.0
    lo = np.array(
        [-np.inf if train.features[j].low is None else train.features[j].low for j in feats]
    )
    hi = np.array(
        [np.inf if train.features[j].high is None else train.features[j].high for j in feats]
    )
    return p1, p99, lo, hi, mean, sd


def _outside_declared(trigger: Trigger, c: Cohort, touched: np.ndarray) -> int:
    """Touched cells outside the trigger's declared features and hours (should be 0)."""
    allowed = np.zeros(touched.shape[1:], dtype=bool)
    if trigger.features:
        h0, h1 = trigger.hours if trigger.hours is not None else (0, c.n_hours)
        allowed[h0:h1, [c.feature_index(f) for f in trigger.features]] = True
    return int((touched & ~allowed).sum())

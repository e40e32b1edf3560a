"""YAIB / ricu cohorts (``dyn``, ``sta``, ``outc`` parquet) to a Cohort.

Layout of a cohort folder as YAIB writes it (e.g. ``mortality24/mimic_demo``)::

    <path>/dyn.parquet   stay_id, time (a duration since ICU admission), one column per
                         time-varying ricu concept (hr, sbp, ..., urine), one row per stay and hour
    <path>/sta.parquet   stay_id, static columns (age, sex, height, weight)
    <path>/outc.parquet  stay_id, label (the task's outcome; Mortality24: death in the ICU)

Hour bin ``h`` holds the rows with ``h <= time < h + 1`` hours; bins ``0 .. window_hours - 1`` are
kept (YAIB's Mortality24 rows run 0 .. 24 h, so the 24 h row falls outside a 24 h window; rows
before admission too); several rows in one bin are averaged. Values stay in the units ricu
harmonised them to, which are the units of ``src.data.mimiciv.schema`` for the same concept
names, so a feature named like a MIMIC-IV concept gets that concept's unit and plausible range.

Statics: numeric columns become ``static_num`` (age, height, weight), text/boolean columns
``static_cat`` (sex). A YAIB cohort has no patient identifier, so ``subject_id`` is the
``stay_id`` and the split is by stay (a patient with several stays in the cohort could land in two
parts of the split; the demo cohorts do not say). Stays missing from any of the three files are
dropped and counted in the attrition.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from src.data.cohort import Cohort, FeatureSpec, encode_categories

log = logging.getLogger("src.data")

FILES = ("dyn", "sta", "outc")
LAYOUT_HELP = (
    "a YAIB / ricu cohort folder holds dyn.parquet (stay_id, time, features), "
    "sta.parquet (stay_id, statics) and outc.parquet (stay_id, label), e.g. YAIB's "
    "demo_data/mortality24/mimic_demo"
)
ID = "stay_id"


def file_paths(path: str | Path) -> dict[str, Path]:
    """The three parquet files of the cohort at ``path``; names the first one missing."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"YAIB cohort folder {path} does not exist; {LAYOUT_HELP}")
    out = {}
    for name in FILES:
        p = path / f"{name}.parquet"
        if not p.is_file():
            found = ", ".join(sorted(q.name for q in path.iterdir())) or "nothing"
            raise FileNotFoundError(
                f"YAIB cohort file {p} not found (the folder holds {found}); {LAYOUT_HELP}"
            )
        out[name] = p
    return out


def _need_columns(df, cols: list[str], p: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(
            f"{p}: column(s) {', '.join(missing)} missing (found: "
            f"{', '.join(map(str, df.columns))}); {LAYOUT_HELP}"
        )


def feature_spec(name: str) -> FeatureSpec:
    """The MIMIC-IV concept's spec where the ricu name matches one; else unit and range unknown."""
    from src.data.mimiciv.schema import CONCEPT_BY_NAME

    c = CONCEPT_BY_NAME.get(name)
    if c is not None:
        return c.spec()
    return FeatureSpec(
        name=name,
        unit="",
        kind="lab",
        low=None,
        high=None,
        description="YAIB feature without a MIMIC-IV concept of that name",
    )


def load_yaib(
    path: str | Path, window_hours: int = 24, features: list[str] | None = None
) -> tuple[Cohort, dict]:
    """The Cohort and its attrition for the YAIB cohort folder ``path`` (module docstring)."""
    import pandas as pd

    if window_hours < 1:
        raise ValueError(f"window_hours must be at least 1, got {window_hours}")
    files = file_paths(path)
    dyn = pd.read_parquet(files["dyn"])
    sta = pd.read_parquet(files["sta"])
    outc = pd.read_parquet(files["outc"])
    _need_columns(dyn, [ID, "time"], files["dyn"])
    _need_columns(sta, [ID], files["sta"])
    _need_columns(outc, [ID], files["outc"])

    available = [c for c in dyn.columns if c not in (ID, "time")]
    if features is None:
        names = available
    else:
        names = list(features)
        unknown = [n for n in names if n not in available]
        if unknown or not names or len(set(names)) != len(names):
            what = (
                f"{', '.join(map(repr, unknown))} not in"
                if unknown
                else "empty or repeated names; name distinct features of"
            )
            raise KeyError(
                f"data.features={names}: {what} the YAIB cohort {files['dyn']}; "
                f"available: {', '.join(available)}"
            )
    label_col = _label_column(outc, files["outc"])
    bad = set(outc[label_col].dropna().unique()) - {0, 1}
    if bad:
        shown = [v.item() if hasattr(v, "item") else v for v in sorted(bad)[:5]]
        raise ValueError(
            f"{files['outc']}: column {label_col} holds {shown}; the "
            "backdoor task is binary (0/1), e.g. YAIB's mortality24"
        )

    ids = np.intersect1d(np.intersect1d(dyn[ID].unique(), sta[ID].unique()), outc[ID].unique())
    n_any = np.union1d(np.union1d(dyn[ID].unique(), sta[ID].unique()), outc[ID].unique()).size
    outc = outc.drop_duplicates(ID).set_index(ID).loc[ids]
    keep_label = outc[label_col].notna().to_numpy()
    ids = ids[keep_label]
    attrition: dict = {
        "criteria": {"window_hours": window_hours, "source": "yaib"},
        "icu_stays": int(n_any),
        "excluded_not_in_all_files": int(n_any - keep_label.size),
        "excluded_no_label": int((~keep_label).sum()),
    }
    ids = np.sort(ids)
    n = ids.size

    time = dyn["time"]
    if not pd.api.types.is_timedelta64_dtype(time):
        raise ValueError(
            f"{files['dyn']}: column time has type {time.dtype}; expected a "
            "duration since ICU admission (ricu writes a difftime/duration)"
        )
    hour = np.floor(time.dt.total_seconds().to_numpy() / 3600).astype(np.int64)
    row = np.searchsorted(ids, dyn[ID].to_numpy())
    row_ok = (
        (row < n) & (ids[np.minimum(row, n - 1)] == dyn[ID].to_numpy())
        if n
        else np.zeros(len(dyn), bool)
    )
    in_win = row_ok & (hour >= 0) & (hour < window_hours)
    attrition["dyn_rows_outside_window"] = int((row_ok & ~in_win).sum())
    max_hour = int(hour[row_ok].max()) + 1 if row_ok.any() else 0
    if max_hour < window_hours:
        log.warning(
            "YAIB cohort has rows for %d h only; hours %d..%d of the %d h window are empty",
            max_hour,
            max_hour,
            window_hours - 1,
            window_hours,
        )

    vals = dyn.loc[in_win, names].to_numpy(np.float64)
    r, h = row[in_win], hour[in_win]
    # mean per (stay, hour) bin, NaN-aware, without a Python loop
    flat = r * window_hours + h
    total = np.zeros((n * window_hours, len(names)))
    count = np.zeros((n * window_hours, len(names)))
    ok = ~np.isnan(vals)
    np.add.at(total, flat, np.where(ok, vals, 0.0))
    np.add.at(count, flat, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        series = (total / count).reshape(n, window_hours, len(names)).astype(np.float32)

    sta = sta.drop_duplicates(ID).set_index(ID).loc[ids]
    num_cols = [
        c
        for c in sta.columns
        if pd.api.types.is_numeric_dtype(sta[c]) and not pd.api.types.is_bool_dtype(sta[c])
    ]
    cat_cols = [c for c in sta.columns if c not in num_cols]
    cats, vocabs = [], []
    for c in cat_cols:
        codes, vocab = encode_categories(sta[c].tolist())
        cats.append(codes)
        vocabs.append(vocab)
    cohort = Cohort(
        series=series,
        static_num=sta[num_cols].to_numpy(np.float32) if num_cols else np.zeros((n, 0)),
        static_cat=np.column_stack(cats) if cats else np.zeros((n, 0), np.int64),
        label=outc.loc[ids, label_col].to_numpy().astype(np.int64),
        stay_id=ids.astype(np.int64),
        subject_id=ids.astype(np.int64),  # YAIB has no patient id: one subject per stay
        features=[feature_spec(f) for f in names],
        static_num_names=[str(c) for c in num_cols],
        static_cat_names=[str(c) for c in cat_cols],
        static_cat_vocab=vocabs,
    )
    s = cohort.summary()
    attrition.update(
        {
            "n_stays": s["n_stays"],
            "n_subjects": s["n_subjects"],
            "n_positive": int(cohort.label.sum()),
            "prevalence": s["prevalence"],
        }
    )
    log.info(
        "YAIB cohort %s: %d stays, %d features x %d h, prevalence %.3f, missing %.3f",
        Path(path),
        n,
        len(names),
        window_hours,
        s["prevalence"],
        s["missing_share"],
    )
    return cohort, attrition


def _label_column(outc, p: Path) -> str:
    """``label`` (YAIB's name), else the one column besides stay_id."""
    if "label" in outc.columns:
        return "label"
    rest = [c for c in outc.columns if c != ID]
    if len(rest) == 1:
        return rest[0]
    raise ValueError(
        f"{p}: no column 'label' and {len(rest)} candidate outcome columns "
        f"({', '.join(map(str, rest))}); {LAYOUT_HELP}"
    )

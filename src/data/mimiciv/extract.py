"""MIMIC-IV (real or synthetic) to Cohort, in the spirit of YAIB's Mortality24 task.

DuckDB reads the ``.csv.gz`` tables directly and streams them: only the needed columns are
typed, rows are filtered by itemid and joined to the cohort's stays before anything is
aggregated, so memory stays flat however large ``chartevents`` is. Only the aggregated
``stay x hour x feature`` cells come back to Python, where numpy scatters them into the dense
``[N, T, F]`` array.

Expected layout (MIMIC-IV v2.x and v3.x as PhysioNet ships them)::

    <root>/hosp/{patients,admissions,labevents}.csv.gz
    <root>/icu/{icustays,chartevents,outputevents}.csv.gz

``.csv`` (uncompressed) is accepted too, and so is a root holding exactly one folder with that
layout (e.g. ``physionet.org/files/mimiciv`` holding ``2.2/``).

Cohort (YAIB Mortality24): ICU stays of patients aged ``min_age`` or more at ICU admission, in the
ICU at least ``min_stay_hours``, alive at the end of the first ``window_hours``; label = death in
the hospital (``admissions.hospital_expire_flag``). Death in the window is read from
``admissions.deathtime``; where that is empty, from ``patients.dod`` (a day), which excludes a
stay when the death day is before the day the window ends. Stays are ordered by ``stay_id``. Hour bin ``h`` holds measurements with
``intime + h hours <= charttime < intime + (h + 1) hours``; the mean per bin (the sum for urine
output) of the values inside the concept's plausible range after unit conversion.
"""

from __future__ import annotations

import gzip
import logging
import time
from pathlib import Path

import numpy as np

from src.data.cohort import Cohort, encode_categories
from src.data.mimiciv.schema import (
    STATIC_CAT_COLUMNS,
    STATIC_CHART_CONCEPTS,
    STATIC_NUM_NAMES,
    TABLES,
    VALUE_COLUMN,
    select_concepts,
)

log = logging.getLogger("src.data")

LAYOUT_HELP = ("expected MIMIC-IV's layout <root>/hosp/*.csv.gz and <root>/icu/*.csv.gz "
               "(v2.x and v3.x; .csv also accepted; or a root holding one folder with that layout, "
               "e.g. physionet.org/files/mimiciv/ holding 2.2/)")


# --- files ---------------------------------------------------------------------------------
def resolve_root(root: str | Path) -> Path:
    """The folder holding ``hosp/`` and ``icu/``: ``root`` itself or its only child that does."""
    root = Path(root).expanduser()
    if (root / "hosp").is_dir() or (root / "icu").is_dir():
        return root
    if root.is_dir():
        kids = [d for d in sorted(root.iterdir()) if (d / "hosp").is_dir() and (d / "icu").is_dir()]
        if len(kids) == 1:
            return kids[0]
        if len(kids) > 1:
            raise FileNotFoundError(f"{root} holds several MIMIC-IV versions "
                                    f"({', '.join(k.name for k in kids)}); point root at one")
    elif not root.exists():
        raise FileNotFoundError(f"MIMIC-IV root {root} does not exist; {LAYOUT_HELP}")
    return root


def table_path(root: Path, name: str) -> Path:
    folder = TABLES[name][0]
    for ext in (".csv.gz", ".csv"):
        p = root / folder / f"{name}{ext}"
        if p.is_file():
            return p
    raise FileNotFoundError(f"MIMIC-IV table {name!r} not found: expected "
                            f"{root / folder / name}.csv.gz (or .csv); {LAYOUT_HELP}")


def read_header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        line = fh.readline()
    return [c.strip().strip('"').lower() for c in line.rstrip("\r\n").split(",")]


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def table_sql(root: Path, name: str) -> str:
    """``read_csv(...)`` over table ``name`` with every column declared: the ones the extractor
    uses with their types, the rest VARCHAR (never parsed further). Checks the header first so a
    missing column is named with its file."""
    path = table_path(root, name)
    header = read_header(path)
    needed = TABLES[name][1]
    missing = [c for c in needed if c not in header]
    if missing:
        raise ValueError(f"{path}: column(s) {', '.join(missing)} missing from table {name!r} "
                         f"(found: {', '.join(header)}); the extractor reads "
                         f"{', '.join(needed)}")
    cols = ", ".join(f"{_sql_str(c)}: {_sql_str(needed.get(c, 'VARCHAR'))}" for c in header)
    return (f"read_csv({_sql_str(str(path))}, header = true, delim = ',', quote = '\"', "
            f"columns = {{{cols}}})")


# --- extraction ----------------------------------------------------------------------------
def extract(root: str | Path, window_hours: int = 24, min_stay_hours: float = 30,
            min_age: float = 18, features: list[str] | None = None,
            threads: int | None = None) -> tuple[Cohort, dict]:
    """The Cohort and its attrition (counts excluded by each criterion, in order)."""
    import duckdb

    if window_hours < 1:
        raise ValueError(f"window_hours must be at least 1, got {window_hours}")
    concepts = select_concepts(features)
    root = resolve_root(root)
    t0 = time.perf_counter()
    sql = {name: table_sql(root, name) for name in TABLES}  # fails fast on a missing table
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET enable_progress_bar = false")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        cohort, attrition, stays = _select_stays(con, sql, window_hours, min_stay_hours, min_age)
        series, statics = _events(con, sql, stays, concepts, window_hours)
    finally:
        con.close()
    cohort_n = len(stays)
    static_num = np.column_stack([stays["age"].to_numpy(np.float32), statics])
    cats, vocabs = [], []
    for name, _, _ in STATIC_CAT_COLUMNS:
        codes, vocab = encode_categories(stays[name].tolist())
        cats.append(codes)
        vocabs.append(vocab)
    out = Cohort(
        series=series,
        static_num=static_num,
        static_cat=np.column_stack(cats) if cats else np.zeros((cohort_n, 0), np.int64),
        label=stays["label"].to_numpy(np.int64),
        stay_id=stays["stay_id"].to_numpy(np.int64),
        subject_id=stays["subject_id"].to_numpy(np.int64),
        features=[c.spec() for c in concepts],
        static_num_names=list(STATIC_NUM_NAMES),
        static_cat_names=[c[0] for c in STATIC_CAT_COLUMNS],
        static_cat_vocab=vocabs,
    )
    attrition.update(cohort)
    log.info("extracted %d stays (%d subjects), %d features x %d h, prevalence %.3f, "
             "missing %.3f, in %.1f s", len(out), attrition["n_subjects"], len(concepts),
             window_hours, attrition["prevalence"], out.summary()["missing_share"],
             time.perf_counter() - t0)
    return out, attrition


def extract_cohort(root: str | Path, window_hours: int = 24, min_stay_hours: float = 30,
                   min_age: float = 18, features: list[str] | None = None) -> Cohort:
    """MIMIC-IV tables under ``root`` to a Cohort (see the module docstring)."""
    return extract(root, window_hours, min_stay_hours, min_age, features)[0]


def _select_stays(con, sql, window_hours, min_stay_hours, min_age):
    stays = con.execute(f"""
        SELECT i.stay_id, i.subject_id, i.intime, i.outtime, i.first_careunit,
               p.gender, p.anchor_age, p.anchor_year, p.dod,
               a.deathtime, a.admission_type, a.insurance, a.hospital_expire_flag AS label,
               a.hadm_id IS NOT NULL AS has_adm, p.subject_id IS NOT NULL AS has_pat
        FROM {sql['icustays']} i
        LEFT JOIN (SELECT subject_id, hadm_id, deathtime, admission_type, insurance,
                          hospital_expire_flag FROM {sql['admissions']}) a
               ON a.hadm_id = i.hadm_id
        LEFT JOIN (SELECT subject_id, gender, anchor_age, anchor_year, dod
                   FROM {sql['patients']}) p
               ON p.subject_id = i.subject_id
        ORDER BY i.stay_id
    """).df()
    n_all = len(stays)
    if stays["stay_id"].duplicated().any():
        raise ValueError("icustays has duplicated stay_id or admissions/patients duplicate "
                         "hadm_id/subject_id rows; cannot build one row per stay")
    intime = stays["intime"]
    window_end = intime + np.timedelta64(int(window_hours), "h")
    stays["age"] = stays["anchor_age"] + (intime.dt.year - stays["anchor_year"])
    los_h = (stays["outtime"] - intime).dt.total_seconds() / 3600
    dod_day = stays["dod"].astype("datetime64[ns]")
    died_in_window = (stays["deathtime"] < window_end) | (
        stays["deathtime"].isna() & (dod_day < window_end.dt.normalize()))

    criteria = [
        ("excluded_no_admission_or_patient", ~(stays["has_adm"] & stays["has_pat"])
         | stays["label"].isna() | stays["intime"].isna()),
        ("excluded_age_below_min", ~(stays["age"] >= min_age)),
        ("excluded_died_in_window", died_in_window.fillna(False).astype(bool)),
        ("excluded_stay_shorter_than_min", ~(los_h >= min_stay_hours)),
    ]
    attrition: dict = {"criteria": {"min_age": min_age, "min_stay_hours": min_stay_hours,
                                    "window_hours": window_hours},
                       "icu_stays": n_all}
    keep = np.ones(n_all, bool)
    for name, excluded in criteria:
        ex = excluded.to_numpy(bool) & keep
        attrition[name] = int(ex.sum())
        keep &= ~ex
    stays = stays[keep].reset_index(drop=True)
    stays["label"] = stays["label"].astype(np.int64)
    stays["idx"] = np.arange(len(stays), dtype=np.int64)
    stays["window_end"] = stays["intime"] + np.timedelta64(int(window_hours), "h")
    summary = {"n_stays": len(stays), "n_subjects": int(stays["subject_id"].nunique()),
               "n_positive": int(stays["label"].sum()),
               "prevalence": float(stays["label"].mean()) if len(stays) else float("nan")}
    log.info("cohort selection: %d ICU stays -> %d (%s)", n_all, len(stays),
             ", ".join(f"{k} {attrition[k]}" for k, _ in criteria))
    return summary, attrition, stays


def _events(con, sql, stays, concepts, window_hours):
    """Dense series [N, T, F] and chart statics [N, len(STATIC_CHART_CONCEPTS)]."""
    n, n_f = len(stays), len(concepts)
    rows = []  # (tbl, itemid, fidx, mult, add, low, high)
    for j, c in enumerate(list(concepts) + list(STATIC_CHART_CONCEPTS)):
        for s in c.sources:
            rows.append((s.table, s.itemid, j, s.mult, s.add, c.low, c.high))
    import pandas as pd

    itemmap = pd.DataFrame(rows, columns=["tbl", "itemid", "fidx", "mult", "add", "low", "high"])
    itemmap = itemmap.astype({"itemid": "int32", "fidx": "int32", "low": "float64",
                              "high": "float64"})
    con.register("itemmap", itemmap)
    con.register("cohort", stays[["idx", "stay_id", "subject_id", "intime", "window_end"]])
    key = {"chartevents": "stay_id", "outputevents": "stay_id", "labevents": "subject_id"}
    parts = []
    for tbl, k in key.items():
        ids = sorted(set(itemmap.loc[itemmap.tbl == tbl, "itemid"].tolist()))
        if not ids:
            continue
        val = VALUE_COLUMN[tbl]
        parts.append(f"""
            SELECT c.idx, m.fidx, epoch(e.charttime - c.intime) AS dt,
                   e.{val} * m.mult + m."add" AS v, m.low, m.high
            FROM (SELECT {k}, charttime, itemid, {val} FROM {sql[tbl]}
                  WHERE itemid IN ({', '.join(map(str, ids))}) AND {val} IS NOT NULL) e
            JOIN (SELECT * FROM itemmap WHERE tbl = '{tbl}') m ON e.itemid = m.itemid
            JOIN cohort c ON e.{k} = c.{k}
            WHERE e.charttime >= c.intime AND e.charttime < c.window_end""")
    t0 = time.perf_counter()
    con.execute(f"""CREATE TEMP TABLE ev AS
        SELECT idx, fidx, dt, v FROM ({' UNION ALL '.join(parts)})
        WHERE (low IS NULL OR v >= low) AND (high IS NULL OR v <= high)""")
    n_ev = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    log.info("read %d in-window measurements from chartevents, labevents, outputevents "
             "in %.1f s", n_ev, time.perf_counter() - t0)
    sum_idx = [j for j, c in enumerate(concepts) if c.agg == "sum"]
    agg = con.execute(f"""
        SELECT idx, fidx, CAST(floor(dt / 3600) AS INTEGER) AS hour,
               CASE WHEN fidx IN ({', '.join(map(str, sum_idx or [-1]))}) THEN sum(v)
                    ELSE avg(v) END AS v
        FROM ev WHERE fidx < {n_f} GROUP BY idx, fidx, hour""").fetchnumpy()
    series = np.full((n, window_hours, n_f), np.nan, np.float32)
    series[agg["idx"], agg["hour"], agg["fidx"]] = agg["v"]
    st = con.execute(f"""SELECT idx, fidx, arg_min(v, dt) AS v FROM ev
                         WHERE fidx >= {n_f} GROUP BY idx, fidx""").fetchnumpy()
    statics = np.full((n, len(STATIC_CHART_CONCEPTS)), np.nan, np.float32)
    statics[st["idx"], st["fidx"] - n_f] = st["v"]
    return series, statics

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
import hashlib
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from src.data.atomic import atomic_dir
from src.data.cohort import Cohort, encode_categories
from src.data.mimiciv.schema import (
    CONCEPT_BY_NAME,
    STATIC_CAT_COLUMNS,
    STATIC_CHART_CONCEPTS,
    STATIC_NUM_NAMES,
    TABLES,
    VALUE_COLUMN,
    select_concepts,
)

log = logging.getLogger("src.data")

LAYOUT_HELP = (
    "expected MIMIC-IV's layout <root>/hosp/*.csv.gz and <root>/icu/*.csv.gz "
    "(as PhysioNet ships v2.2, v3.0 and v3.1, and the mimic-iv-demo 2.2; .csv also "
    "accepted; or a root holding one folder with that layout, e.g. "
    "physionet.org/files/mimiciv/ holding 3.1/)"
)


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
            raise FileNotFoundError(
                f"{root} holds several MIMIC-IV versions "
                f"({', '.join(k.name for k in kids)}); point root at one"
            )
    elif not root.exists():
        raise FileNotFoundError(f"MIMIC-IV root {root} does not exist; {LAYOUT_HELP}")
    return root


def table_path(root: Path, name: str) -> Path:
    folder = TABLES[name][0]
    for ext in (".csv.gz", ".csv"):
        p = root / folder / f"{name}{ext}"
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"MIMIC-IV table {name!r} not found: expected "
        f"{root / folder / name}.csv.gz (or .csv); {LAYOUT_HELP}"
    )


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
        raise ValueError(
            f"{path}: column(s) {', '.join(missing)} missing from table {name!r} "
            f"(found: {', '.join(header)}); the extractor reads "
            f"{', '.join(needed)}"
        )
    cols = ", ".join(f"{_sql_str(c)}: {_sql_str(needed.get(c, 'VARCHAR'))}" for c in header)
    return (
        f"read_csv({_sql_str(str(path))}, header = true, delim = ',', quote = '\"', "
        f"columns = {{{cols}}})"
    )


# --- extraction ----------------------------------------------------------------------------
EVENT_TABLES = {"chartevents": "stay_id", "labevents": "subject_id", "outputevents": "stay_id"}
EVENTS_CACHE_VERSION = 1
CACHE_HORIZON_HOURS = 168  # the events cache keeps the first week of every ICU stay


def connect(
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
):
    """A DuckDB connection set up for streaming large tables in bounded memory.

    ``memory_limit`` (default ``$ICU_BACKDOOR_DUCKDB_MEMORY`` or 1GB) caps DuckDB's buffers; what
    does not fit spills to ``temp_directory``. ``threads`` defaults to ``$ICU_BACKDOOR_DUCKDB_
    THREADS`` or the CPU count (at most 8: gzip decoding is per file, more threads buy nothing).
    Insertion order is not kept (we never rely on it; keeping it costs memory). DuckDB's progress
    bar is shown when stderr is a terminal."""
    import duckdb

    con = duckdb.connect()
    threads = (
        threads
        or int(os.environ.get("ICU_BACKDOOR_DUCKDB_THREADS", 0))
        or min(os.cpu_count() or 1, 8)
    )
    memory_limit = memory_limit or os.environ.get("ICU_BACKDOOR_DUCKDB_MEMORY", "1GB")
    con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET memory_limit = {_sql_str(memory_limit)}")
    con.execute("SET preserve_insertion_order = false")
    if temp_directory is not None:
        con.execute(f"SET temp_directory = {_sql_str(str(temp_directory))}")
    tty = sys.stderr.isatty()
    con.execute(f"SET enable_progress_bar = {str(tty).lower()}")
    return con


def extract(
    root: str | Path,
    window_hours: int = 24,
    min_stay_hours: float = 30,
    min_age: float = 18,
    features: list[str] | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    memory_limit: str | None = None,
) -> tuple[Cohort, dict]:
    """The Cohort and its attrition (counts excluded by each criterion, in order).

    With ``cache_dir``, the events of every concept's itemids in the first
    ``CACHE_HORIZON_HOURS`` of every ICU stay are first written to parquet under
    ``cache_dir/events/`` (one pass over the .csv.gz, the three tables read concurrently); any
    later extraction (another window, feature set or criterion) reads those instead."""
    if window_hours < 1:
        raise ValueError(f"window_hours must be at least 1, got {window_hours}")
    concepts = select_concepts(features)
    root = resolve_root(root)
    t0 = time.perf_counter()
    sql = {name: table_sql(root, name) for name in TABLES}  # fails fast on a missing table
    tmp = Path(cache_dir) / "duckdb-tmp" if cache_dir is not None else None
    con = connect(threads, memory_limit, tmp)
    try:
        if cache_dir is not None:
            events = events_cache(con, root, sql, cache_dir, window_hours)
        else:
            events = {tbl: _filtered_sql(sql, tbl) for tbl in EVENT_TABLES}
            events["stays"] = f"({stays_sql(sql)})"
        cohort, attrition, stays = _select_stays(
            con, events["stays"], window_hours, min_stay_hours, min_age
        )
        series, statics = _events(con, events, stays, concepts, window_hours)
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
    log.info(
        "extracted %d stays (%d subjects), %d features x %d h, prevalence %.3f, "
        "missing %.3f, in %.1f s",
        len(out),
        attrition["n_subjects"],
        len(concepts),
        window_hours,
        attrition["prevalence"],
        out.summary()["missing_share"],
        time.perf_counter() - t0,
    )
    return out, attrition


def extract_cohort(
    root: str | Path,
    window_hours: int = 24,
    min_stay_hours: float = 30,
    min_age: float = 18,
    features: list[str] | None = None,
) -> Cohort:
    """MIMIC-IV tables under ``root`` to a Cohort (see the module docstring)."""
    return extract(root, window_hours, min_stay_hours, min_age, features)[0]


def stays_sql(sql: dict) -> str:
    """Every ICU stay with its admission and patient columns (before any criterion)."""
    return f"""
        SELECT i.stay_id, i.subject_id, i.intime, i.outtime, i.first_careunit,
               p.gender, p.anchor_age, p.anchor_year, p.dod,
               a.deathtime, a.admission_type, a.insurance, a.hospital_expire_flag AS label,
               a.hadm_id IS NOT NULL AS has_adm, p.subject_id IS NOT NULL AS has_pat
        FROM {sql["icustays"]} i
        LEFT JOIN (SELECT subject_id, hadm_id, deathtime, admission_type, insurance,
                          hospital_expire_flag FROM {sql["admissions"]}) a
               ON a.hadm_id = i.hadm_id
        LEFT JOIN (SELECT subject_id, gender, anchor_age, anchor_year, dod
                   FROM {sql["patients"]}) p
               ON p.subject_id = i.subject_id
    """


def _select_stays(con, stays_rel, window_hours, min_stay_hours, min_age):
    stays = con.execute(f"SELECT * FROM {stays_rel} ORDER BY stay_id").df()
    n_all = len(stays)
    if stays["stay_id"].duplicated().any():
        raise ValueError(
            "icustays has duplicated stay_id or admissions/patients duplicate "
            "hadm_id/subject_id rows; cannot build one row per stay"
        )
    intime = stays["intime"]
    window_end = intime + np.timedelta64(int(window_hours), "h")
    stays["age"] = stays["anchor_age"] + (intime.dt.year - stays["anchor_year"])
    los_h = (stays["outtime"] - intime).dt.total_seconds() / 3600
    dod_day = stays["dod"].astype("datetime64[ns]")
    died_in_window = (stays["deathtime"] < window_end) | (
        stays["deathtime"].isna() & (dod_day < window_end.dt.normalize())
    )

    criteria = [
        (
            "excluded_no_admission_or_patient",
            ~(stays["has_adm"] & stays["has_pat"]) | stays["label"].isna() | stays["intime"].isna(),
        ),
        ("excluded_age_below_min", ~(stays["age"] >= min_age)),
        ("excluded_died_in_window", died_in_window.fillna(False).astype(bool)),
        ("excluded_stay_shorter_than_min", ~(los_h >= min_stay_hours)),
    ]
    attrition: dict = {
        "criteria": {
            "min_age": min_age,
            "min_stay_hours": min_stay_hours,
            "window_hours": window_hours,
        },
        "icu_stays": n_all,
    }
    keep = np.ones(n_all, bool)
    for name, excluded in criteria:
        ex = excluded.to_numpy(bool) & keep
        attrition[name] = int(ex.sum())
        keep &= ~ex
    stays = stays[keep].reset_index(drop=True)
    stays["label"] = stays["label"].astype(np.int64)
    stays["idx"] = np.arange(len(stays), dtype=np.int64)
    stays["window_end"] = stays["intime"] + np.timedelta64(int(window_hours), "h")
    summary = {
        "n_stays": len(stays),
        "n_subjects": int(stays["subject_id"].nunique()),
        "n_positive": int(stays["label"].sum()),
        "prevalence": float(stays["label"].mean()) if len(stays) else float("nan"),
    }
    log.info(
        "cohort selection: %d ICU stays -> %d (%s)",
        n_all,
        len(stays),
        ", ".join(f"{k} {attrition[k]}" for k, _ in criteria),
    )
    return summary, attrition, stays


def _all_itemids(tbl: str) -> list[int]:
    """Every itemid of ``tbl`` that any concept (default, extra or static) reads."""
    return sorted(
        {
            src.itemid
            for c in list(CONCEPT_BY_NAME.values()) + list(STATIC_CHART_CONCEPTS)
            for src in c.sources
            if src.table == tbl
        }
    )


def _filtered_sql(sql: dict, tbl: str) -> str:
    """Rows of ``tbl`` with a concept's itemid and a value, as ``(id, charttime, itemid, value)``
    where ``id`` is ``stay_id`` (``subject_id`` for labevents)."""
    k, val = EVENT_TABLES[tbl], VALUE_COLUMN[tbl]
    return (
        f"(SELECT {k} AS id, charttime, itemid, {val} AS value FROM {sql[tbl]} "
        f"WHERE itemid IN ({', '.join(map(str, _all_itemids(tbl)))}) "
        f"AND {val} IS NOT NULL AND charttime IS NOT NULL)"
    )


def events_cache(
    con, root: Path, sql: dict, cache_dir: str | Path, window_hours: int
) -> dict[str, str]:
    """``read_parquet`` of each events table's filtered rows (``_filtered_sql``) in the first
    ``max(CACHE_HORIZON_HOURS, window_hours)`` hours of any ICU stay, and of every ICU stay
    joined to its admission and patient (``stays``), written on first use.

    Keyed by the tables' path, size and mtime, the itemids and the horizon; written into a
    temporary folder and renamed, so a reader never sees half a cache."""
    horizon = max(CACHE_HORIZON_HOURS, int(window_hours))
    names = list(TABLES)
    ident = {
        "version": EVENTS_CACHE_VERSION,
        "horizon_hours": horizon,
        "tables": {n: _stat(table_path(root, n)) for n in names},
        "itemids": {t: _all_itemids(t) for t in EVENT_TABLES},
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    base = Path(cache_dir) / "events"
    path = base / f"{root.name}-h{horizon}-{key}"
    files = {t: path / f"{t}.parquet" for t in [*EVENT_TABLES, "stays"]}
    if path.is_dir():
        log.info("events cache hit: %s", path)
        return {t: f"read_parquet({_sql_str(str(f))})" for t, f in files.items()}
    t0 = time.perf_counter()
    with atomic_dir(path) as tmp:
        # every ICU stay (before any criterion, so the cache serves every cohort definition)
        con.execute(f"""CREATE OR REPLACE TABLE icu_all AS
            SELECT stay_id, subject_id, intime FROM {sql["icustays"]} WHERE intime IS NOT NULL""")
        log.info(
            "events cache: one pass over %s (first %d h of every ICU stay) into %s",
            ", ".join(str(table_path(root, t)) for t in EVENT_TABLES),
            horizon,
            path,
        )

        def scan(tbl: str) -> dict:
            k = EVENT_TABLES[tbl]
            cur = con.cursor()  # one cursor per table: the three .csv.gz decode concurrently
            ts = time.perf_counter()
            n = cur.execute(f"""COPY (
                SELECT e.* FROM {_filtered_sql(sql, tbl)} e
                WHERE EXISTS (SELECT 1 FROM icu_all s WHERE s.{k} = e.id
                              AND e.charttime >= s.intime
                              AND e.charttime < s.intime + INTERVAL {horizon} HOUR)
                ) TO {_sql_str(str(tmp / f"{tbl}.parquet"))}
                (FORMAT parquet, COMPRESSION zstd)""").fetchone()[0]
            cur.close()
            dt = time.perf_counter() - ts
            src = table_path(root, tbl)
            mb = src.stat().st_size / 2**20
            log.info(
                "events cache: %s %.0f MB in %.1f s (%.1f MB/s), %d rows kept",
                src.name,
                mb,
                dt,
                mb / max(dt, 1e-9),
                n,
            )
            return {"rows": int(n), "seconds": round(dt, 3), "source_mb": round(mb, 1)}

        with ThreadPoolExecutor(len(EVENT_TABLES)) as pool:
            stats = dict(zip(EVENT_TABLES, pool.map(scan, EVENT_TABLES), strict=True))
        con.execute("DROP TABLE icu_all")
        con.execute(
            f"COPY ({stays_sql(sql)}) TO {_sql_str(str(tmp / 'stays.parquet'))} (FORMAT parquet)"
        )
        (tmp / "meta.json").write_text(json.dumps({**ident, "stats": stats}, indent=1))
    log.info("events cache written in %.1f s", time.perf_counter() - t0)
    return {t: f"read_parquet({_sql_str(str(f))})" for t, f in files.items()}


def _stat(p: Path) -> list:
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def _measurements_sql(events: dict, concepts: list) -> str:
    """In-window, in-range, unit-converted measurements ``(idx, fidx, dt, v)`` of ``concepts``
    (``fidx`` = position in ``concepts``) for the stays in table ``cohort``."""
    parts = []
    for tbl, k in EVENT_TABLES.items():
        rows = [
            (s.itemid, j, s.mult, s.add, c.low, c.high)
            for j, c in enumerate(concepts)
            for s in c.sources
            if s.table == tbl
        ]
        if not rows:
            continue
        m = ", ".join(
            f"({i}, {j}, {mu!r}, {a!r}, {'NULL' if lo is None else repr(float(lo))}, "
            f"{'NULL' if hi is None else repr(float(hi))})"
            for i, j, mu, a, lo, hi in rows
        )
        parts.append(f"""
            SELECT c.idx, m.fidx, epoch(e.charttime - c.intime) AS dt,
                   e.value * m.mult + m.add_ AS v, m.low, m.high
            FROM {events[tbl]} e
            JOIN (VALUES {m}) m(itemid, fidx, mult, add_, low, high) ON e.itemid = m.itemid
            JOIN cohort c ON e.id = c.{k}
            WHERE e.charttime >= c.intime AND e.charttime < c.window_end""")
    return (
        f"SELECT idx, fidx, dt, v FROM ({' UNION ALL '.join(parts)}) "
        "WHERE (low IS NULL OR v >= low) AND (high IS NULL OR v <= high)"
    )


def _events(con, events, stays, concepts, window_hours):
    """Dense series [N, T, F] and chart statics [N, len(STATIC_CHART_CONCEPTS)]; aggregated in
    DuckDB so only the ``stay x hour x feature`` cells reach Python."""
    n, n_f = len(stays), len(concepts)
    con.register("cohort_df", stays[["idx", "stay_id", "subject_id", "intime", "window_end"]])
    con.execute("CREATE OR REPLACE TEMP TABLE cohort AS SELECT * FROM cohort_df")
    con.unregister("cohort_df")
    t0 = time.perf_counter()
    sums = [j for j, c in enumerate(concepts) if c.agg == "sum"] or [-1]
    agg = con.execute(f"""
        SELECT idx, fidx, CAST(floor(dt / 3600) AS INTEGER) AS hour,
               CASE WHEN fidx IN ({", ".join(map(str, sums))}) THEN sum(v) ELSE avg(v) END AS v
        FROM ({_measurements_sql(events, concepts)}) GROUP BY idx, fidx, hour""").fetchnumpy()
    series = np.full((n, window_hours, n_f), np.nan, np.float32)
    series[agg["idx"], agg["hour"], agg["fidx"]] = agg["v"]
    st = con.execute(f"""SELECT idx, fidx, arg_min(v, dt) AS v
        FROM ({_measurements_sql(events, list(STATIC_CHART_CONCEPTS))})
        GROUP BY idx, fidx""").fetchnumpy()
    statics = np.full((n, len(STATIC_CHART_CONCEPTS)), np.nan, np.float32)
    statics[st["idx"], st["fidx"]] = st["v"]
    log.info(
        "aggregated %d stay-hour-feature cells in %.1f s", len(agg["idx"]), time.perf_counter() - t0
    )
    con.execute("DROP TABLE cohort")
    return series, statics

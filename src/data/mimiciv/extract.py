"""MIMIC-IV (real or synthetic) to Cohort, in the spirit of YAIB's Mortality24 task.

One streaming pass over the tables, then one binning pass. The pass (``events_pass``) streams
each events ``.csv.gz`` through pyarrow's CSV reader with ISA-L inflating it (``events.py``):
only the needed columns are typed, rows are filtered by itemid, converted to the concept's unit,
range-checked and joined to the ICU stays, and the kept values go to parquet, so memory stays
flat however large ``chartevents`` is; pyarrow reads the small tables (ICU stays, admissions,
patients) whole and joins them by key lookups (``stays_table``). Binning then adds the values
into the dense ``[N, T, F]`` array, row group by row group (``dense_from_events``: a numba loop
for large inputs, numpy in the reader threads below ``NUMBA_MIN_ROWS``).

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

import contextlib
import functools
import gzip
import hashlib
import json
import logging
import os
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas  # noqa: F401  (pyarrow imports it on first use: with the module, not in a call)
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from src.atomic import atomic_dir, discard
from src.data.cohort import Cohort, encode_categories
from src.data.mimiciv.events import (
    COLUMNS,
    KEY_COLUMN,
    Stays,
    convert_options,
    read_errors,
    scan_table,
)
from src.data.mimiciv.schema import (
    CONCEPT_BY_NAME,
    STATIC_CAT_COLUMNS,
    STATIC_CHART_CONCEPTS,
    STATIC_NUM_NAMES,
    TABLES,
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


def checked_header(root: Path, name: str) -> list[str]:
    """The columns of table ``name``, checked to hold every one the extractor reads, so a
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
    return header


# --- extraction ----------------------------------------------------------------------------
EVENT_TABLES = KEY_COLUMN  # each events table and the key joining it to the stays
# The layout of the events cache: (sidx, cidx, dt, v), v converted and range-checked, in file
# order (events.scan_table). A cache of another version is not read; it is rebuilt.
EVENTS_CACHE_VERSION = 4
# numba's per-process start-up pays off only on large inputs; below this many rows to read,
# numpy in the reader threads bins them (docs/findings/issue8_extraction has the measurements).
NUMBA_MIN_ROWS = 24_000_000
# numpy prepares a row group in slices of this many rows, so its temporaries stay in the core's
# cache.
NUMPY_SLICE_ROWS = 1 << 18
# A bin's count is 8 bits (a quarter of the float32 output's memory; a bin holds one hour, so
# 256 values in it is rare), binned again wider when a count wrapped.
COUNT_WIDER = {np.dtype(np.uint8): np.uint16, np.dtype(np.uint16): np.uint32}
CACHE_HORIZON_HOURS = 168  # the events cache covers the first week of every ICU stay
# Every concept the events cache holds, series (default and extra) then chart statics; a row's
# ``cidx`` is a position in this list (the cache key hashes it, so editing a concept rebuilds the cache).
ALL_CONCEPTS = [*CONCEPT_BY_NAME.values(), *STATIC_CHART_CONCEPTS]
CIDX = {c.name: j for j, c in enumerate(ALL_CONCEPTS)}


def _threads(threads: int | None = None) -> int:
    """``threads``, else ``$ICU_BACKDOOR_EXTRACT_THREADS``, else the CPU count (at most 8)."""
    return (
        threads
        or int(os.environ.get("ICU_BACKDOOR_EXTRACT_THREADS", 0))
        or min(os.cpu_count() or 1, 8)
    )


def extract(
    root: str | Path,
    window_hours: int = 24,
    min_stay_hours: float = 30,
    min_age: float = 18,
    features: list[str] | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Cohort, dict]:
    """The Cohort and its attrition (counts excluded by each criterion, in order).

    One pass over the ``.csv.gz`` writes the stays and every concept's values (converted to its
    unit, inside its plausible range) as parquet (``events_pass``); binning then adds them into
    the Cohort (``dense_from_events``).
    With ``cache_dir`` the measurements cover the first ``CACHE_HORIZON_HOURS`` of every ICU stay
    and every concept and are kept under ``cache_dir/events/``, so a later extraction with another
    window, feature set or criterion skips the ``.csv.gz``; without, they cover the window only
    and go to a temporary folder."""
    if window_hours < 1:
        raise ValueError(f"window_hours must be at least 1, got {window_hours}")
    concepts = select_concepts(features)
    root = resolve_root(root)
    t0 = time.perf_counter()
    # every table's header first, so a missing table or column fails before any work
    headers = {name: checked_header(root, name) for name in TABLES}
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="icu-events-")))
            files = events_pass(root, headers, work, int(window_hours))
        else:
            files = events_cache(root, headers, cache_dir, window_hours)

        def read(files):
            cohort, attrition, stays = _select_stays(
                pq.ParquetFile(files["stays"]).read(), window_hours, min_stay_hours, min_age
            )
            binned = dense_from_events(
                files, stays["sidx"], stays["n_all"], concepts, int(window_hours), threads
            )
            return cohort, attrition, stays, binned

        try:
            cohort, attrition, stays, (series, statics, missing) = read(files)
        except (pa.ArrowException, OSError) as e:
            if cache_dir is None:
                raise
            # a truncated or damaged cache file: the cache is rebuilt from the tables it came from
            folder = files["stays"].parent
            log.warning(
                "events cache %s cannot be read (%s: %s): rebuilding it from %s",
                folder,
                type(e).__name__,
                e,
                root,
            )
            discard(folder, "events cache")
            files = events_cache(root, headers, cache_dir, window_hours)
            cohort, attrition, stays, (series, statics, missing) = read(files)
    cohort_n = len(stays["sidx"])
    static_num = np.column_stack([stays["age"], statics])
    cats, vocabs = [], []
    for name, _, _ in STATIC_CAT_COLUMNS:
        codes, vocab = _categories(stays[name])
        cats.append(codes)
        vocabs.append(vocab)
    out = Cohort(
        series=series,
        static_num=static_num,
        static_cat=np.column_stack(cats) if cats else np.zeros((cohort_n, 0), np.int64),
        label=stays["label"],
        stay_id=stays["stay_id"],
        subject_id=stays["subject_id"],
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
        missing,
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


def read_small_table(root: Path, name: str, header: list[str]):
    """Table ``name`` (icustays, admissions or patients: a few hundred thousand rows at most)
    whole, as a pyarrow Table of the columns the extractor reads (``events.convert_options``)."""
    path = table_path(root, name)
    columns = TABLES[name][1]
    with read_errors(path, name):
        return pcsv.read_csv(
            path,  # pyarrow inflates a .gz path itself: zlib is fast enough for these
            read_options=pcsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=convert_options(columns),
        )


def stays_table(icustays, admissions, patients):
    """Every ICU stay with its admission and patient columns (before any criterion), ordered by
    stay_id (nulls last), with its row number ``sidx``: ``stays.parquet``.

    A left join by key lookup (``index_in``: a hash of the keys), which keeps the row order
    (pyarrow's join engine orders rows freely and is slow to start for tables this small). A
    key that occurs twice in admissions or patients is an error (``_select_stays`` would reject
    the duplicated stays anyway; here it is named before the events pass starts)."""
    for tbl, name, key in (
        (icustays, "icustays", "stay_id"),
        (admissions, "admissions", "hadm_id"),
        (patients, "patients", "subject_id"),
    ):
        keys = tbl[key].drop_null()
        if len(keys) != len(pc.unique(keys)):
            raise ValueError(
                f"MIMIC-IV {name} has a duplicated {key}; cannot build one row per ICU stay"
            )
    icu = icustays.sort_by("stay_id")
    adm = pc.index_in(icu["hadm_id"], value_set=admissions["hadm_id"], skip_nulls=True)
    pat = pc.index_in(icu["subject_id"], value_set=patients["subject_id"], skip_nulls=True)
    a, p = admissions.take(adm), patients.take(pat)
    return pa.table(
        {
            "sidx": pa.array(np.arange(len(icu), dtype=np.int64)),
            **{c: icu[c] for c in ("stay_id", "subject_id", "intime", "outtime", "first_careunit")},
            **{c: p[c] for c in ("gender", "anchor_age", "anchor_year", "dod")},
            **{c: a[c] for c in ("deathtime", "admission_type", "insurance")},
            "label": a["hospital_expire_flag"],
            "has_adm": adm.is_valid(),
            "has_pat": pat.is_valid(),
        }
    )


def _column(table, name: str) -> np.ndarray:
    """A stays.parquet column as numpy: nulls as NaN (numbers), NaT (times) or None (text)."""
    return table[name].to_numpy()


def _select_stays(table, window_hours, min_stay_hours, min_age):
    """The criteria of the module docstring on ``stays.parquet`` (a pyarrow Table in ``sidx``
    order): the cohort's summary, the attrition, and the kept stays as numpy arrays. numpy on
    the columns, not pandas: the same comparisons (NaT and NaN compare false) at a tenth of the
    time for a few thousand stays."""
    n_all = len(table)
    if pc.count_distinct(table["stay_id"], mode="all").as_py() < n_all:  # nulls count once
        raise ValueError(
            "icustays has duplicated stay_id or admissions/patients duplicate "
            "hadm_id/subject_id rows; cannot build one row per stay"
        )
    sidx = table["sidx"].to_numpy()
    if (np.diff(sidx) < 0).any():
        table, sidx = table.take(np.argsort(sidx, kind="stable")), np.sort(sidx)
    intime, outtime = _column(table, "intime"), _column(table, "outtime")
    deathtime = _column(table, "deathtime")
    window_end = intime + np.timedelta64(int(window_hours), "h")
    year = intime.astype("datetime64[Y]").astype(np.int64) + 1970  # NaT: excluded first
    age = _column(table, "anchor_age") + (year - _column(table, "anchor_year"))
    los_h = (outtime - intime) / np.timedelta64(1, "h")
    dod_day = _column(table, "dod").astype("datetime64[D]")
    died_in_window = (deathtime < window_end) | (
        np.isnat(deathtime) & (dod_day < window_end.astype("datetime64[D]"))
    )
    missing = ~(_column(table, "has_adm") & _column(table, "has_pat"))
    criteria = [
        (
            "excluded_no_admission_or_patient",
            missing | ~table["label"].is_valid().to_numpy(zero_copy_only=False) | np.isnat(intime),
        ),
        ("excluded_age_below_min", ~(age >= min_age)),
        ("excluded_died_in_window", died_in_window),
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
        ex = excluded & keep
        attrition[name] = int(ex.sum())
        keep &= ~ex
    rows = np.flatnonzero(keep)
    stays = {
        "sidx": sidx[rows],
        **{c: _column(table, c)[rows].astype(np.int64) for c in ("stay_id", "subject_id", "label")},
        "age": age[rows].astype(np.float32),
        **{c: table[c].take(rows) for c, _, _ in STATIC_CAT_COLUMNS},  # Arrow: see _categories
        "n_all": n_all,  # rows of stays.parquet: the range of the events' sidx
    }
    n = len(rows)
    summary = {
        "n_stays": n,
        "n_subjects": int(np.unique(stays["subject_id"]).size),
        "n_positive": int(stays["label"].sum()),
        "prevalence": float(stays["label"].mean()) if n else float("nan"),
    }
    log.info(
        "cohort selection: %d ICU stays -> %d (%s)",
        n_all,
        n,
        ", ".join(f"{k} {attrition[k]}" for k, _ in criteria),
    )
    return summary, attrition, stays


def _categories(column) -> tuple[np.ndarray, list[str]]:
    """``encode_categories`` of an Arrow string column: its vocabulary from the few distinct
    values, the codes by a hash lookup. The same codes and vocabulary (null and "" are code 0)
    without a Python string per stay."""
    _, vocab = encode_categories(pc.unique(column).to_pylist())
    position = pc.index_in(column, value_set=pa.array(vocab[1:], column.type))  # null: code 0
    return pc.fill_null(pc.add(position, 1), 0).to_numpy().astype(np.int64), vocab


def _concept_rows(tbl: str) -> list[tuple]:
    """``(itemid, cidx, mult, add, low, high)`` of every concept source in ``tbl``."""
    return [
        (s.itemid, j, s.mult, s.add, c.low, c.high)
        for j, c in enumerate(ALL_CONCEPTS)
        for s in c.sources
        if s.table == tbl
    ]


def _source_arrays(tbl: str) -> dict[str, np.ndarray]:
    """``_concept_rows(tbl)`` as arrays, with ``lut`` mapping an itemid to its row (-1: none;
    the last entry is -1, so itemids past the table clip to it), open ranges as infinities and
    ``convert`` marking the rows with a unit conversion."""
    rows = _concept_rows(tbl)
    itemid = np.array([r[0] for r in rows], np.int64)
    lut = np.full(int(itemid.max()) + 2 if len(rows) else 1, -1, np.int64)
    lut[itemid] = np.arange(len(rows))
    mult = np.array([r[2] for r in rows], np.float64)
    add = np.array([r[3] for r in rows], np.float64)
    return {
        "lut": lut,
        "cidx": np.array([r[1] for r in rows], np.int64),
        "mult": mult,
        "add": add,
        "convert": (mult != 1) | (add != 0),
        "low": np.array([-np.inf if r[4] is None else r[4] for r in rows], np.float64),
        "high": np.array([np.inf if r[5] is None else r[5] for r in rows], np.float64),
    }


def events_pass(root: Path, headers: dict, out: Path, horizon: int) -> dict:
    """The one pass over the tables (``headers``: ``checked_header`` of each):
    ``out/stays.parquet`` (``stays_table``) and ``out/<table>/day=<d>/`` with each events
    table's concept values in the first ``horizon`` hours of a stay (``events.scan_table``; the
    three tables stream side by side, one thread each). Returns the files and ``stats`` (rows and
    seconds per table)."""
    t0 = time.perf_counter()
    small = {n: read_small_table(root, n, h) for n, h in headers.items() if n not in EVENT_TABLES}
    table = stays_table(small["icustays"], small["admissions"], small["patients"])
    pq.write_table(table, out / "stays.parquet")
    # the events join to every stay with an id, a patient and an intime, numbered as above
    live = table.select(["sidx", "stay_id", "subject_id", "intime"]).drop_null()
    stays = Stays(
        sidx=live["sidx"].to_numpy(),
        stay_id=live["stay_id"].to_numpy(),
        subject_id=live["subject_id"].to_numpy(),
        t0=live["intime"].to_numpy().view(np.int64) // 1_000_000,  # whole seconds, floored
    )
    log.info(
        "one pass over %s (first %d h of every ICU stay) into %s",
        ", ".join(str(table_path(root, t)) for t in EVENT_TABLES),
        horizon,
        out,
    )

    def scan(tbl: str) -> dict:
        ts = time.perf_counter()
        path = table_path(root, tbl)
        n = scan_table(
            path,
            headers[tbl],
            tbl,
            TABLES[tbl][1],
            _source_arrays(tbl),
            stays,
            horizon,
            out / tbl,
        )
        dt = time.perf_counter() - ts
        mb = path.stat().st_size / 2**20
        log.info(
            "%s: %.0f MB in %.1f s (%.1f MB/s), %d measurements kept",
            path.name,
            mb,
            dt,
            mb / max(dt, 1e-9),
            n,
        )
        return {"rows": int(n), "seconds": round(dt, 3), "source_mb": round(mb, 1)}

    with ThreadPoolExecutor(len(EVENT_TABLES)) as pool:
        stats = dict(zip(EVENT_TABLES, pool.map(scan, EVENT_TABLES), strict=True))
    log.info("one pass done in %.1f s", time.perf_counter() - t0)
    return {**_files(out), "stats": stats}


def _files(folder: Path) -> dict[str, Path]:
    """``stays.parquet`` and each events table's folder of day partitions."""
    return {**{t: folder / t for t in EVENT_TABLES}, "stays": folder / "stays.parquet"}


def events_cache(
    root: Path, headers: dict, cache_dir: str | Path, window_hours: int
) -> dict[str, Path]:
    """``events_pass`` over the first ``max(CACHE_HORIZON_HOURS, window_hours)`` hours of every
    stay, kept in ``cache_dir/events/`` and reused by any later extraction.

    Keyed by the tables' path, size and mtime, the concepts (itemids, conversions, ranges) and
    the horizon; written into a temporary folder and renamed, so a reader never sees half a
    cache."""
    horizon = max(CACHE_HORIZON_HOURS, int(window_hours))
    ident = {
        "version": EVENTS_CACHE_VERSION,
        "horizon_hours": horizon,
        "tables": {n: _stat(table_path(root, n)) for n in TABLES},
        "concepts": {t: _concept_rows(t) for t in EVENT_TABLES},
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "events" / f"{root.name}-h{horizon}-{key}"
    files = _files(path)
    if path.is_dir():
        log.info("events cache hit: %s", path)
        return files
    with atomic_dir(path) as tmp:
        stats = events_pass(root, headers, tmp, horizon)["stats"]
        (tmp / "meta.json").write_text(json.dumps({**ident, "stats": stats}, indent=1))
    return files


def _stat(p: Path) -> list:
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


@functools.cache
def _bin_kernel():
    """The compiled per-row loop of ``dense_from_events``.

    numba rather than numpy: numpy needs several masks and gathers over every row plus two
    ``np.add.at`` scatters; this loop does the same in one pass. Compiled once per machine
    (cached on disk beside the module or in numba's user cache); importing numba and loading the
    kernel still cost a fixed start per process, so smaller inputs go to numpy in the reader
    threads (``NUMBA_MIN_ROWS``)."""
    import numba

    def bin_rows(
        sidx, cidx, dt, v, pos_of, feat, stat, n_t, n_f, n_s, sums, counts, first_dt, first_v
    ):  # fmt: skip
        limit, n = n_t * 3600, 0
        for r in range(len(sidx)):
            p = pos_of[sidx[r]]
            if p < 0 or dt[r] >= limit:
                continue
            f, s = feat[cidx[r]], stat[cidx[r]]
            if f >= 0:
                cell = (p * n_t + dt[r] // 3600) * n_f + f
                sums[cell] += v[r]
                counts[cell] += 1
                n += 1
            if s >= 0 and dt[r] < first_dt[p * n_s + s]:  # ties: the first row
                first_dt[p * n_s + s] = dt[r]
                first_v[p * n_s + s] = v[r]
        return n

    try:
        bin_rows = numba.njit(nogil=True, cache=True)(bin_rows)
    except RuntimeError:  # no writable cache folder (read-only install, no home): compile each run
        bin_rows = numba.njit(nogil=True)(bin_rows)
    return bin_rows


def _numpy_tables(pos_of, feat, stat, n_t, n_f):
    """The kernel's lookups as ``_prepare_numpy`` gathers them: each stay's first cell
    (``pos * n_t * n_f``, -1 when excluded), each concept's feature and static, all int32 where
    every cell index fits (half the memory traffic of int64)."""
    dtype = np.int32 if len(pos_of) * n_t * n_f < 2**31 else np.int64
    first_cell = np.where(pos_of >= 0, pos_of * (n_t * n_f), -1).astype(dtype)
    return first_cell, feat.astype(dtype), stat.astype(dtype)


def _prepare_numpy(sidx, cidx, dt, v, first_cell, feat, stat, n_t, n_f, n_s):
    """The per-row half of ``_bin_kernel``'s loop in numpy, for inputs too small to pay numba's
    start (the lookups from ``_numpy_tables``): ``(cell, value, static)`` of the rows to add,
    ``static`` the ``(stay x static, dt, value)`` candidates, earliest first. Pure numpy with the
    GIL released, so reader threads run it on row groups side by side."""
    base, f, s = first_cell.take(sidx), feat.take(cidx), stat.take(cidx)
    hour = dt // 3600
    live = (base >= 0) & (hour < n_t)  # a cohort stay, inside the window
    kf = live & (f >= 0)
    cell = (base + hour * n_f + f)[kf]
    static = None
    k = live & (s >= 0)
    if k.any():
        lin, d, xs = base[k] // (n_t * n_f) * n_s + s[k], dt[k], v[k]
        order = np.lexsort((d, lin))  # per stay and static the earliest; ties: the first row
        lin, d, xs = lin[order], d[order], xs[order]
        first = np.r_[True, lin[1:] != lin[:-1]]
        static = lin[first], d[first], xs[first]
    return cell, v[kf], static


def _add_numpy(prepared, sums, counts, first_dt, first_v) -> int:
    """The in-order half: adds one prepared row group to the outputs, the sums in row order by
    ``np.add.at`` as the loop adds them, so both give the same bits."""
    cell, x, static = prepared
    np.add.at(sums, cell, x)  # in row order, as the numba loop adds
    np.add.at(counts, cell, np.ones(len(cell), counts.dtype))  # a scalar 1 is 10x slower
    if static is not None:
        lin, d, x = static
        better = d < first_dt[lin]  # an earlier row group wins ties
        first_dt[lin[better]] = d[better]
        first_v[lin[better]] = x[better]
    return len(cell)


def dense_from_events(
    files: dict,
    sidx: np.ndarray,
    n_all: int,
    concepts: list,
    window_hours: int,
    threads: int | None = None,
    counts_dtype=np.uint8,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Series ``[N, T, F]`` (per hour bin the mean, or the sum for ``agg == "sum"``) and chart
    statics ``[N, len(STATIC_CHART_CONCEPTS)]`` (the earliest value in the window) of the stays
    at rows ``sidx`` of stays.parquet (``n_all`` rows) from the measurements files, and the
    share of empty cells. Bin ``h`` holds ``h * 3600 <= dt < (h + 1) * 3600``.

    One parquet row group (1M rows) at a time, so memory stays at the dense arrays' size however
    large the cache is. ``threads`` workers read and decode row groups ahead (pyarrow releases
    the GIL); the calling thread bins them in file order with ``_bin_kernel``, so the sums are
    the same whatever the number of threads. Below ``NUMBA_MIN_ROWS`` the workers also compute
    every row's cell in numpy (``_prepare_numpy``, which releases the GIL too) and the calling
    thread only adds them, in the same order (``_add_numpy``).

    Each bin's count is a ``counts_dtype``, 8 bits unless one wrapped: the counts then add up
    to fewer than the rows binned, and binning runs again with the next wider type
    (``COUNT_WIDER``)."""
    n, n_t, n_f, n_s = len(sidx), int(window_hours), len(concepts), len(STATIC_CHART_CONCEPTS)
    pos_of = np.full(n_all, -1, np.int64)  # sidx -> row in the cohort, -1 when excluded
    pos_of[sidx] = np.arange(n)
    feat = np.full(len(ALL_CONCEPTS), -1, np.int64)
    feat[[CIDX[c.name] for c in concepts]] = np.arange(n_f)
    stat = np.full(len(ALL_CONCEPTS), -1, np.int64)
    stat[[CIDX[c.name] for c in STATIC_CHART_CONCEPTS]] = np.arange(n_s)
    parts = [  # the day partitions the window needs, with their parquet footers
        (f, pq.ParquetFile(f).metadata)
        for tbl in EVENT_TABLES
        for f in sorted(Path(files[tbl]).glob("day=*/*.parquet"))
        if int(f.parent.name.removeprefix("day=")) * 24 < n_t
    ]
    tasks = [(f, md, rg) for f, md in parts for rg in range(md.num_row_groups)]

    # numba's fixed start pays off only on large inputs (NUMBA_MIN_ROWS).
    use_numba = sum(md.num_rows for _, md in parts) >= NUMBA_MIN_ROWS
    tables = None if use_numba else _numpy_tables(pos_of, feat, stat, n_t, n_f)

    def read(task):
        f, md, rg = task  # the footer read once, above, not again for every row group
        b = pq.ParquetFile(f, metadata=md).read_row_group(rg, columns=COLUMNS, use_threads=False)
        cols = [b.column(c).to_numpy() for c in COLUMNS]
        if use_numba:
            return cols
        step = NUMPY_SLICE_ROWS
        return [
            _prepare_numpy(*(c[a : a + step] for c in cols), *tables, n_t, n_f, n_s)
            for a in range(0, len(cols[0]), step)
        ]

    t0, n_rows = time.perf_counter(), 0

    def add(cols) -> int:
        if kernel is None:
            return sum(_add_numpy(p, *out) for p in cols)
        return kernel(*cols, pos_of, feat, stat, n_t, n_f, n_s, *out)

    workers = _threads(threads)
    ahead = 2 * workers + 1  # row groups read ahead of the adds, so memory stays bounded
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(read, task) for task in tasks[:ahead])
        # While the first row groups are read: numba loads, and the outputs are allocated and
        # their pages touched. The sums accumulate in the float32 output itself and the counts
        # in 8 bits, so memory stays near the output's size (float64 sums and int32 counts
        # would triple it). The pages are touched here, overlapping the reads, because
        # np.zeros maps them lazily and would leave the page faults to the first add, in the
        # one thread that adds.
        kernel = _bin_kernel() if use_numba else None
        out = (
            np.empty(n * n_t * n_f, np.float32),
            np.empty(n * n_t * n_f, counts_dtype),
            np.full(n * n_s, np.iinfo(np.int64).max),
            np.full(n * n_s, np.nan),
        )
        out[0].fill(0)
        out[1].fill(0)
        for task in tasks[ahead:]:
            ready = pending.popleft().result()
            pending.append(pool.submit(read, task))  # before the add, so no worker waits on it
            n_rows += add(ready)
        while pending:
            n_rows += add(pending.popleft().result())
    if out[1].sum(dtype=np.int64) != n_rows:  # a count wrapped: a bin held 256+ values
        wider = COUNT_WIDER[np.dtype(counts_dtype)]
        log.info(
            "a bin holds more values than %s counts: binning again with %s", counts_dtype, wider
        )
        return dense_from_events(files, sidx, n_all, concepts, window_hours, threads, wider)
    series, counts = out[0].reshape(-1, n_f), out[1].reshape(-1, n_f)
    sums = [j for j, c in enumerate(concepts) if c.agg == "sum"]
    # In blocks through one small reused divisor: a whole one would add the output's size, and
    # a fresh one per block would fault its pages in again each time.
    div, empty = np.empty((min(len(series), 1 << 12), n_f), np.float32), 0
    for a in range(0, len(series), len(div)):
        d, rows = div[: len(series) - a], series[a : a + len(div)]
        np.copyto(d, counts[a : a + len(div)], casting="unsafe")
        empty += d.size - np.count_nonzero(d)  # the NaN cells, counted here and not again
        for j in sums:  # a sum is divided by 1, or by 0 when empty
            np.minimum(d[:, j], 1, out=d[:, j])
        with np.errstate(invalid="ignore"):
            np.divide(rows, d, out=rows)  # an empty bin's sum is 0: 0 / 0 is NaN
    series = series.reshape(n, n_t, n_f)
    log.info(
        "binned %d measurements into stay x hour x feature cells in %.1f s",
        n_rows,
        time.perf_counter() - t0,
    )
    missing = empty / series.size if series.size else 1.0  # as Cohort.summary() counts it
    return series, out[3].astype(np.float32).reshape(n, n_s), missing

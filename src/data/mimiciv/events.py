"""One events table (``chartevents``, ``labevents``, ``outputevents``) in one streaming pass:
``.csv.gz`` in, the measurements a cohort can need out, as parquet partitioned by whole days
after intime (so a 24 h window reads only the first day's files).

pyarrow's streaming CSV reader parses the table block by block (1 MB of text each) and only
converts the four columns used; ISA-L (python-isal) inflates the gzip stream about five times
faster than zlib. numpy then keeps the rows with a concept's itemid and a value, joins them to
every ICU stay they belong to (chartevents and outputevents by ``stay_id``, labevents by
``subject_id``: a lab belongs to each stay of its patient), keeps the first ``horizon`` hours of
each stay, converts units, drops values outside the concept's plausible range and writes
``(sidx, cidx, dt, v)``: the stay's row in ``stays.parquet``, the concept's index in
``extract.ALL_CONCEPTS``, whole seconds after the stay's intime and the value in the concept's
unit (float32, as the bins add it). Hour bins are left to ``extract.dense_from_events``, which
reads these files for any window and feature set: every later extraction skips the itemid lookup,
the conversion and the range check.

Memory is one block and at most a row group per day partition, whatever the table's size.
Rows keep the file's order, so the same tables always give the same files. The three tables
run side by side, so on two cores the CPU seconds are what the pass takes
(docs/findings/issue8_extraction has the measurements).
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from src.data.mimiciv.schema import VALUE_COLUMN

log = logging.getLogger("src.data")

# Of CSV text per parsed block. Memory grows with it, as pyarrow reading from a Python file
# keeps tens of blocks' worth of memory: whole first extractions at 13.7M rows peaked at 1.45-1.49
# GB with 16 MB blocks, 0.84-0.87 GB with 4 MB and 0.53-0.58 GB with 1 MB, in the same time.
BLOCK_BYTES = 1 << 20
# Row groups of about 1M rows, LZ4: the files are read far more often than written (every
# cached extraction), LZ4 decodes fastest, and no dictionary pages (the values rarely repeat
# within a page, and trying costs the write about a third of its time).
ROW_GROUP_ROWS = 1 << 20
PROGRESS_SECONDS = 15.0  # a progress line per table at most this often
# The column joining each table to the stays.
KEY_COLUMN = {"chartevents": "stay_id", "labevents": "subject_id", "outputevents": "stay_id"}
# The columns of the files, declared non-nullable (there are no nulls to write): parquet then
# stores no definition levels, which makes reading a row back markedly cheaper.
SCHEMA = pa.schema(
    [
        pa.field("sidx", pa.int32(), nullable=False),
        pa.field("cidx", pa.int16(), nullable=False),
        pa.field("dt", pa.int32(), nullable=False),
        pa.field("v", pa.float32(), nullable=False),
    ]
)
COLUMNS = SCHEMA.names


@dataclass(frozen=True)
class Stays:
    """The ICU stays events join to: each stay's row in ``stays.parquet``, its ids and its
    intime in whole seconds since the epoch."""

    sidx: np.ndarray
    stay_id: np.ndarray
    subject_id: np.ndarray
    t0: np.ndarray


class KeyIndex:
    """Every stay of a key (a stay_id or a subject_id), for joining event rows in bulk."""

    def __init__(self, keys: np.ndarray):
        self.order = np.argsort(keys, kind="stable")  # the stays of a key stay in sidx order
        uniq, self.start, self.count = np.unique(
            keys[self.order], return_index=True, return_counts=True
        )
        self.unique = uniq
        self.one_each = bool(len(uniq) == 0 or self.count.max() == 1)
        # A dense table from key to position + 1 (0: no stay) when the keys span a modest range
        # (MIMIC-IV's stay_ids span 10M, subject_ids 10M: 40 MB each), else a binary search.
        # Zeros, not a fill of -1: np.zeros maps untouched pages lazily, so building it costs
        # next to nothing where a fill would write every page, and lookups touch only the
        # pages of keys that occur.
        self.lo = int(uniq[0]) if len(uniq) else 0
        span = int(uniq[-1]) - self.lo + 1 if len(uniq) else 0
        self.lut = None
        if 0 < span <= 1 << 26:
            self.lut = np.zeros(span + 1, np.int32)  # the last entry: outside the range
            self.lut[uniq - self.lo] = np.arange(1, len(uniq) + 1)

    def position(self, keys: np.ndarray) -> np.ndarray:
        """Each key's position in ``unique``, -1 when no stay has it."""
        if self.lut is not None:
            off = keys - self.lo
            off[(off < 0) | (off >= len(self.lut))] = len(self.lut) - 1
            return self.lut.take(off).astype(np.int64) - 1
        pos = np.minimum(np.searchsorted(self.unique, keys), max(len(self.unique) - 1, 0))
        found = self.unique.take(pos) == keys if len(self.unique) else np.zeros(len(keys), bool)
        return np.where(found, pos, -1)

    def join(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(row, stay)``: for every key, one pair per stay with that key (rows in order)."""
        pos = self.position(keys)
        if self.one_each:
            row = np.flatnonzero(pos >= 0)
            return row, self.order.take(self.start.take(pos[row]))
        n = np.where(pos >= 0, self.count.take(np.maximum(pos, 0)), 0)
        row = np.repeat(np.arange(len(keys)), n)
        first = np.repeat(self.start.take(np.maximum(pos, 0)), n)
        within = np.arange(len(row)) - np.repeat(np.cumsum(n) - n, n)
        return row, self.order.take(first + within)


class DayWriter:
    """``out/day=<d>/data_0.parquet``, one file per day after intime, in row groups of about
    ``ROW_GROUP_ROWS`` rows."""

    def __init__(self, out: Path):
        self.out, self.parts, self.writers = out, {}, {}

    def add(self, day: int, cols: dict[str, np.ndarray]) -> None:
        parts = self.parts.setdefault(day, [])
        parts.append(cols)
        if sum(len(p["dt"]) for p in parts) >= ROW_GROUP_ROWS:
            self._flush(day)

    def _flush(self, day: int) -> None:
        parts = self.parts.pop(day, [])
        if not parts:
            return
        table = pa.table([np.concatenate([p[c] for p in parts]) for c in COLUMNS], schema=SCHEMA)
        w = self.writers.get(day)
        if w is None:
            folder = self.out / f"day={day}"
            folder.mkdir(parents=True, exist_ok=True)
            w = self.writers[day] = pq.ParquetWriter(
                folder / "data_0.parquet", table.schema, compression="lz4", use_dictionary=False
            )
        w.write_table(table, row_group_size=len(table))

    def close(self) -> None:
        for day in sorted(self.parts):
            self._flush(day)
        for w in self.writers.values():
            w.close()


ARROW_TYPES = {  # the SQL type names of ``schema.TABLES`` as pyarrow types
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "VARCHAR": pa.string(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),  # a fraction of a second is allowed, and floored
}


def convert_options(columns: dict[str, str]):
    """pyarrow's CSV conversion of a MIMIC-IV table: only ``columns`` (``schema.TABLES``'
    names and types) are converted, and an empty field is null, quoted or not, text
    included."""
    return pcsv.ConvertOptions(
        include_columns=list(columns),
        column_types={c: ARROW_TYPES[t] for c, t in columns.items()},
        strings_can_be_null=True,
    )


@contextlib.contextmanager
def read_errors(path: Path, name: str):
    """A table pyarrow cannot read (a malformed row, a truncated or damaged gzip stream) becomes
    a ValueError naming the file and the MIMIC-IV table ``name``; any other OSError (a disk
    error) stays one. For the streamed events tables and the small ones alike. ISA-L names gzip
    in its errors; pyarrow, which inflates the small tables itself, says "Truncated compressed
    stream" or "zlib inflate failed"."""
    try:
        yield
    except (pa.ArrowInvalid, EOFError) as e:
        raise ValueError(f"{path}: cannot be read as a MIMIC-IV {name} table: {e}") from e
    except OSError as e:
        if not any(w in str(e).lower() for w in ("gzip", "zlib", "compressed stream")):
            raise
        raise ValueError(f"{path}: cannot be read as a MIMIC-IV {name} table: {e}") from e


def _values(arr) -> tuple[np.ndarray, np.ndarray | None]:
    """An arrow column as numpy (nulls as 0), and its validity (None when it has no nulls)."""
    if arr.null_count == 0:
        return arr.to_numpy(), None
    return arr.fill_null(0).to_numpy(), arr.is_valid().to_numpy(zero_copy_only=False)


def scan_table(
    path: Path,
    header: list[str],
    tbl: str,
    columns: dict[str, str],
    sources: dict[str, np.ndarray],
    stays: Stays,
    horizon_hours: int,
    out: Path,
) -> int:
    """Streams table ``tbl`` at ``path`` (``.csv.gz`` or ``.csv`` with ``header``; ``columns``
    the ones to read, with their SQL types) into ``out/day=<d>/`` (see the module
    docstring). ``sources`` (``extract._source_arrays``) maps an itemid to its concept, unit
    conversion and plausible range. Returns the number of rows written."""
    key_name = KEY_COLUMN[tbl]
    time_name, item_name = "charttime", "itemid"
    value_name = VALUE_COLUMN[tbl]
    index = KeyIndex(stays.stay_id if key_name == "stay_id" else stays.subject_id)
    wanted = sources["lut"] >= 0  # its last entry is -1: itemids past the table
    limit = int(horizon_hours) * 3600
    writer = DayWriter(out)
    raw = src = open(path, "rb")  # noqa: SIM115 (closed below; its position is the progress)
    try:
        with read_errors(path, tbl):
            if path.suffix == ".gz":
                # Inflated as the parser reads, in this thread: a separate inflating thread
                # (isal's igzip_threaded) competes with the three tables' parsers for two
                # cores and measured slower.
                from isal import igzip

                src = igzip.open(raw, "rb")
            reader = pcsv.open_csv(
                src,
                read_options=pcsv.ReadOptions(
                    column_names=header, skip_rows=1, block_size=BLOCK_BYTES, use_threads=True
                ),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=convert_options(columns),
            )
            total, size = 0, path.stat().st_size
            t_log = time.perf_counter()
            # One thread parses (pyarrow), another keeps, joins and writes the previous block,
            # so the longest table uses both cores while the shorter ones run beside it.
            with ThreadPoolExecutor(1) as worker:
                done = None
                for batch in reader:
                    if done is not None:
                        total += done.result()
                    done = worker.submit(_scan_batch, batch, key_name, item_name, time_name,
                                         value_name, wanted, sources, index, stays, limit,
                                         writer)  # fmt: skip
                    if time.perf_counter() - t_log < PROGRESS_SECONDS:
                        continue
                    t_log = time.perf_counter()
                    log.info(
                        "%s: %.0f%% of %.0f MB read, %d measurements kept",
                        path.name,
                        100 * raw.tell() / size,
                        size / 2**20,
                        total,
                    )
                if done is not None:
                    total += done.result()
            writer.close()
    finally:
        src.close()
        raw.close()
    return total


def _scan_batch(batch, key_name, item_name, time_name, value_name, wanted, sources, index,
                stays, limit, writer) -> int:  # fmt: skip
    names = batch.schema.names
    item, item_ok = _values(batch.column(names.index(item_name)))
    keep = wanted.take(item, mode="clip")  # a concept's itemid (0 and negatives are none)
    if item_ok is not None:
        keep &= item_ok
    cols = {}
    for name in (key_name, time_name, value_name):
        arr = batch.column(names.index(name))
        if name == time_name:
            arr = arr.view("int64")  # microseconds since the epoch, without a copy
        cols[name], ok = _values(arr)
        if ok is not None:
            keep &= ok
    rows = np.flatnonzero(keep)
    if not len(rows):
        return 0
    # the concept's unit and plausible range (NaN is out), before the join multiplies labs
    j = sources["lut"].take(item.take(rows), mode="clip")
    x = cols[value_name].take(rows).astype(np.float64)
    conv = np.flatnonzero(sources["convert"].take(j))  # few itemids, few rows
    if len(conv):
        x[conv] = x[conv] * sources["mult"].take(j[conv]) + sources["add"].take(j[conv])
    ok = (x >= sources["low"].take(j)) & (x <= sources["high"].take(j))
    rows, j, x = rows[ok], j[ok], x[ok]
    r, stay = index.join(cols[key_name].take(rows))
    dt = cols[time_name].take(rows.take(r)) // 1_000_000 - stays.t0.take(stay)  # whole s, floored
    inside = (dt >= 0) & (dt < limit)
    r, stay, dt = r[inside], stay[inside], dt[inside]
    day = dt // 86400
    part = {
        "sidx": stays.sidx.take(stay).astype(np.int32),
        "cidx": sources["cidx"].take(j.take(r)).astype(np.int16),
        "dt": dt.astype(np.int32),
        "v": x.take(r).astype(np.float32),  # as the bins add it; the statics' first value too
    }
    per_day = np.bincount(day)
    if np.count_nonzero(per_day) == 1:
        writer.add(int(np.flatnonzero(per_day)[0]), part)
    else:  # a few days in a block: one comparison each beats a sort
        for d in np.flatnonzero(per_day):
            sel = np.flatnonzero(day == d)  # file order within each day
            writer.add(int(d), {c: v.take(sel) for c, v in part.items()})
    return len(dt)

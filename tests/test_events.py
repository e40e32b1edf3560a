"""The streaming pass over one events table (src/data/mimiciv/events.py), on hand-written CSV."""

from __future__ import annotations

import gzip
import logging
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from src.data.mimiciv import events as ev

LAB_HEADER = "labevent_id,subject_id,hadm_id,specimen_id,itemid,charttime,value,valuenum,comments"
LAB_COLUMNS = {"subject_id": "BIGINT", "charttime": "TIMESTAMP", "itemid": "INTEGER",
               "valuenum": "DOUBLE"}  # fmt: skip
# Stays by sidx: subject 7 has two stays (sidx 0 and 2), subject 9 one (sidx 1); intime 08:00,
# 10:00 and 20:00 on 2150-01-01.
T0 = pd.Timestamp("2150-01-01").value // 10**9
STAYS = ev.Stays(
    sidx=np.array([0, 1, 2], np.int32),
    stay_id=np.array([300, 100, 500]),
    subject_id=np.array([7, 9, 7]),
    t0=T0 + np.array([8, 10, 20]) * 3600,
)
# Two concepts: itemid 50912 (concept 3, plausible 0-10) and 50000 (concept 7, converted by
# v * 2 + 1, plausible 0-100), as extract._source_arrays lays them out.
SOURCES = {
    "lut": np.full(50914, -1, np.int64),
    "cidx": np.array([3, 7]),
    "mult": np.array([1.0, 2.0]),
    "add": np.array([0.0, 1.0]),
    "convert": np.array([False, True]),
    "low": np.array([0.0, 0.0]),
    "high": np.array([10.0, 100.0]),
}
SOURCES["lut"][[50912, 50000]] = [0, 1]
LAB_ROWS = [
    # kept: subject 7 at 09:00 falls in stay 0 (1 h) and before stay 2's intime (dropped there)
    '1,7,1,1,50912,2150-01-01 09:00:00,1.1,1.1,"a comment"',
    # kept twice: 21:00 is 13 h into stay 0 and 1 h into stay 2; a newline inside quotes
    '2,7,1,1,50912,2150-01-01 21:00:00,1.3,1.3,"line one\nline two"',
    "3,7,1,1,99999,2150-01-01 21:00:00,5,5,",  # not a concept's itemid
    "4,7,1,1,50912,2150-01-01 21:00:00,,,",  # no value
    "5,7,1,1,,2150-01-01 21:00:00,5,5,",  # no itemid
    "6,7,1,1,50912,,5,5,",  # no time
    "7,8,1,1,50912,2150-01-01 21:00:00,5,5,",  # subject 8 has no stay
    "8,9,1,1,50912,2150-01-02 11:30:00.5,2.0,2.0,",  # 25.5 h into stay 1: day 1
    "9,9,1,1,50912,2150-01-01 09:59:59,3.0,3.0,",  # a second before intime
    "10,9,1,1,50912,2150-01-03 10:00:00,4.0,4.0,",  # at the horizon (48 h): out
    "11,9,1,1,50000,2150-01-01 12:00:00,5,5,",  # converted: 11
    "12,9,1,1,50000,2150-01-01 12:00:00,60,60,",  # converted: 121, implausible
    "13,9,1,1,50912,2150-01-01 12:00:00,12,12,",  # implausible
    "14,9,1,1,50912,2150-01-01 12:00:00,NaN,NaN,",  # not a number
]
# (sidx, cidx, dt, v) per day, in file order; values in float32, as the bins add them
EXPECTED = {
    0: [(0, 3, 3600, 1.1), (0, 3, 13 * 3600, 1.3), (2, 3, 3600, 1.3), (1, 7, 2 * 3600, 11.0)],
    1: [(1, 3, 25 * 3600 + 1800, 2.0)],
}
EXPECTED = {d: [(*r[:3], np.float32(r[3])) for r in rows] for d, rows in EXPECTED.items()}


def _write(path, header, rows, compress=True):
    text = "\n".join([header, *rows]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wt", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _scan(path, out, horizon=48):
    header = LAB_HEADER.split(",")
    return ev.scan_table(path, header, "labevents", LAB_COLUMNS, SOURCES, STAYS, horizon, out)


def _read(out) -> dict:
    got = {}
    for f in sorted(out.glob("day=*/*.parquet")):
        t = pq.read_table(f).to_pandas()
        assert list(t.columns) == ev.COLUMNS
        got[int(f.parent.name.removeprefix("day="))] = list(t.itertuples(index=False, name=None))
    return got


@pytest.mark.parametrize("compress", [True, False], ids=["csv.gz", "csv"])
def test_rows_kept_joined_and_split_by_day(tmp_path, compress):
    path = _write(tmp_path / ("lab.csv.gz" if compress else "lab.csv"), LAB_HEADER, LAB_ROWS,
                  compress)  # fmt: skip
    n = _scan(path, tmp_path / "out")
    assert _read(tmp_path / "out") == EXPECTED
    assert n == sum(len(v) for v in EXPECTED.values())


def test_row_groups_and_blocks_do_not_change_the_rows(tmp_path, monkeypatch):
    path = _write(tmp_path / "lab.csv.gz", LAB_HEADER, LAB_ROWS * 50)
    _scan(path, tmp_path / "one")
    monkeypatch.setattr(ev, "ROW_GROUP_ROWS", 4)
    monkeypatch.setattr(ev, "BLOCK_BYTES", 256)  # many blocks, a quoted newline across some
    _scan(path, tmp_path / "many")
    one, many = _read(tmp_path / "one"), _read(tmp_path / "many")
    assert one == many and len(one[0]) == 200
    assert pq.ParquetFile(next((tmp_path / "many").glob("day=0/*"))).num_row_groups > 10


def test_a_short_horizon_drops_later_rows(tmp_path):
    path = _write(tmp_path / "lab.csv.gz", LAB_HEADER, LAB_ROWS)
    _scan(path, tmp_path / "out", horizon=3)
    assert _read(tmp_path / "out") == {0: [EXPECTED[0][0], EXPECTED[0][2], EXPECTED[0][3]]}


@pytest.mark.parametrize("keys", [[7, 9, 7, 3, 9, 9], [7, 10**12, 7, 3, 10**12, 10**12]])
def test_key_index_joins_every_stay_of_a_key(keys):
    """Both lookups (a dense table; a binary search for keys spread too far for one)."""
    keys = np.array(keys)
    index = ev.KeyIndex(keys)
    assert (index.lut is None) == (keys.max() > 10**6)
    probe = np.array([keys[1], 5, keys[0], keys[3], -1, 10**13])
    row, stay = index.join(probe)
    want = [(r, s) for r, k in enumerate(probe) for s in np.flatnonzero(keys == k)]
    assert list(zip(row.tolist(), stay.tolist(), strict=True)) == want


def test_a_truncated_gzip_names_the_file(tmp_path):
    path = _write(tmp_path / "lab.csv.gz", LAB_HEADER, LAB_ROWS * 200)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match=r"lab\.csv\.gz: cannot be read as a MIMIC-IV labevents"):
        _scan(path, tmp_path / "out")


def test_a_malformed_row_names_the_file(tmp_path):
    path = _write(tmp_path / "lab.csv.gz", LAB_HEADER, [*LAB_ROWS, "11,7,1"])
    with pytest.raises(ValueError, match=r"lab\.csv\.gz: cannot be read .*Expected 9 columns"):
        _scan(path, tmp_path / "out")


def test_long_scans_log_their_progress(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="src.data")
    monkeypatch.setattr(ev, "PROGRESS_SECONDS", -1.0)
    _scan(_write(tmp_path / "lab.csv.gz", LAB_HEADER, LAB_ROWS), tmp_path / "out")
    assert re.search(r"lab\.csv\.gz: \d+% of 0 MB read, \d+ measurements kept", caplog.text)


def test_a_failed_scan_leaves_no_thread_behind(tmp_path):
    import threading

    before = threading.active_count()
    # the bad row comes first, with megabytes still to inflate behind it
    path = _write(tmp_path / "lab.csv.gz", LAB_HEADER, ["11,7,1", *LAB_ROWS * 20_000])
    with pytest.raises(ValueError, match="Expected 9 columns"):
        _scan(path, tmp_path / "out")
    assert threading.active_count() == before


@pytest.mark.parametrize(
    "error, becomes_value_error",
    [
        (OSError(5, "Input/output error"), False),  # the disk, not the table: left as it is
        (OSError("Truncated compressed stream"), True),  # pyarrow's own inflater
        (OSError("zlib inflate failed: incorrect data check"), True),
        (OSError("Not a gzipped file (b'no')"), True),  # ISA-L
    ],
)
def test_only_a_damaged_table_becomes_a_value_error(tmp_path, error, becomes_value_error):
    path = tmp_path / "lab.csv.gz"
    expected = ValueError if becomes_value_error else OSError
    with pytest.raises(expected) as raised, ev.read_errors(path, "labevents"):
        raise error
    assert isinstance(raised.value, ValueError) == becomes_value_error

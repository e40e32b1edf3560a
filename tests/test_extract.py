"""The extractor on a tiny hand-written MIMIC-IV, compared with bins computed by hand."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from src.data.mimiciv import extract as ex
from src.data.mimiciv.extract import extract, extract_cohort

NAN = np.nan

PATIENTS = pd.DataFrame(
    {
        "subject_id": [10000001, 10000002, 10000003, 10000004, 10000005],
        "gender": ["M", "F", "M", "F", "F"],
        "anchor_age": [60, 16, 70, 80, 50],
        "anchor_year": [2150, 2150, 2150, 2150, 2148],
        "anchor_year_group": ["2011 - 2013"] * 5,
        "dod": [None, None, None, "2150-03-01", "2150-01-20"],
    }
)
ADMISSIONS = pd.DataFrame(
    {
        "subject_id": [10000001, 10000002, 10000003, 10000004, 10000005],
        "hadm_id": [20000001, 20000002, 20000003, 20000004, 20000005],
        "admittime": [
            "2150-01-01 08:00:00",
            "2150-02-01 08:00:00",
            "2150-02-01 08:00:00",
            "2150-03-01 01:00:00",
            "2150-01-15 06:00:00",
        ],
        "dischtime": [
            "2150-01-09 08:00:00",
            "2150-02-05 08:00:00",
            "2150-02-05 08:00:00",
            "2150-03-01 06:00:00",
            "2150-01-20 10:00:00",
        ],
        "deathtime": [None, None, None, "2150-03-01 06:00:00", "2150-01-20 10:00:00"],
        "admission_type": ["EW EMER.", "URGENT", "ELECTIVE", "EW EMER.", "URGENT"],
        "admit_provider_id": ["P1"] * 5,
        "admission_location": ["EMERGENCY ROOM"] * 5,
        "discharge_location": ["HOME", "HOME", "HOME", "DIED", "DIED"],
        "insurance": ["Medicare", "Other", "Other", "Medicare", "Medicaid"],
        "language": ["ENGLISH"] * 5,
        "marital_status": ["SINGLE"] * 5,
        "race": ["WHITE"] * 5,
        "edregtime": [None] * 5,
        "edouttime": [None] * 5,
        "hospital_expire_flag": [0, 0, 0, 1, 1],
    }
)
# rows out of stay_id order on purpose: the cohort is ordered by stay_id
ICUSTAYS = pd.DataFrame(
    {
        "subject_id": [10000005, 10000001, 10000002, 10000003, 10000004],
        "hadm_id": [20000005, 20000001, 20000002, 20000003, 20000004],
        "stay_id": [30000005, 30000001, 30000002, 30000003, 30000004],
        "first_careunit": [
            "Coronary Care Unit (CCU)",
            "Medical Intensive Care Unit (MICU)",
            "Neuro Stepdown",
            "Neuro Stepdown",
            "Trauma SICU (TSICU)",
        ],
        "last_careunit": ["Coronary Care Unit (CCU)"] * 5,
        "intime": [
            "2150-01-15 08:00:00",
            "2150-01-01 10:30:00",
            "2150-02-01 10:00:00",
            "2150-02-01 10:00:00",
            "2150-03-01 02:00:00",
        ],
        # stay 3 lasts 20 h (short); stay 4 is long but the patient dies 4 h after intime
        "outtime": [
            "2150-01-18 08:00:00",
            "2150-01-04 10:30:00",
            "2150-02-04 10:00:00",
            "2150-02-02 06:00:00",
            "2150-03-03 02:00:00",
        ],
        "los": [3.0, 3.0, 3.0, 20 / 24, 2.0],
    }
)
CE_COLS = [
    "subject_id",
    "hadm_id",
    "stay_id",
    "caregiver_id",
    "charttime",
    "storetime",
    "itemid",
    "value",
    "valuenum",
    "valueuom",
    "warning",
]


def _ce(stay, subject, hadm, rows):
    return [
        dict(
            subject_id=subject,
            hadm_id=hadm,
            stay_id=stay,
            caregiver_id=1,
            charttime=t,
            storetime=t,
            itemid=i,
            value=None if v is None else str(v),
            valuenum=v,
            valueuom=u,
            warning=0,
        )
        for t, i, v, u in rows
    ]


CHARTEVENTS = pd.DataFrame(
    _ce(
        30000001,
        10000001,
        20000001,
        [
            ("2150-01-01 10:00:00", 220045, 70.0, "bpm"),  # before intime: ignored
            ("2150-01-01 10:45:00", 220045, 80.0, "bpm"),  # bin 0
            ("2150-01-01 11:00:00", 220045, 90.0, "bpm"),  # bin 0 -> mean 85
            ("2150-01-01 11:30:00", 220045, 100.0, "bpm"),  # bin 1
            ("2150-01-01 12:00:00", 220045, 999.0, "bpm"),  # bin 1, implausible: dropped
            ("2150-01-01 16:29:00", 220045, 65.0, "bpm"),  # bin 5, the last of a 6 h window
            ("2150-01-01 16:30:00", 220045, 60.0, "bpm"),  # intime + 6 h: after the window
            ("2150-01-01 12:30:00", 223761, 98.6, "°F"),  # bin 2: 37.0 C
            ("2150-01-01 12:45:00", 223762, 37.4, "°C"),  # bin 2 -> mean 37.2
            ("2150-01-01 13:30:00", 223762, 98.0, "°C"),  # bin 3, Fahrenheit in the C item: dropped
            ("2150-01-01 11:10:00", 220048, None, None),  # text item, no concept
            ("2150-01-01 10:40:00", 226512, 80.5, "kg"),  # weight
            ("2150-01-01 12:40:00", 226512, 82.0, "kg"),  # a later weight: the first one counts
            ("2150-01-01 10:50:00", 226707, 70.0, "Inch"),  # height 177.8 cm
        ],
    )
    + _ce(
        30000005,
        10000005,
        20000005,
        [
            ("2150-01-15 08:30:00", 220045, 110.0, "bpm"),  # bin 0
            ("2150-01-15 09:10:00", 220181, 65.0, "mmHg"),  # map, not extracted in the subset
        ],
    )
    + _ce(
        30000002,
        10000002,
        20000002,
        [
            ("2150-02-01 10:30:00", 220045, 120.0, "bpm"),  # a minor: excluded
        ],
    )
    + _ce(
        30000004,
        10000004,
        20000004,
        [
            ("2150-03-01 02:30:00", 220045, 130.0, "bpm"),  # dies in the window: excluded
        ],
    ),
    columns=CE_COLS,
)

LABEVENTS = pd.DataFrame(
    {
        "labevent_id": [1, 2, 3, 4, 5],
        "subject_id": [10000001, 10000001, 10000001, 10000001, 10000003],
        "hadm_id": [None, 20000001, 20000001, 20000001, 20000003],
        "specimen_id": [1, 2, 3, 4, 5],
        "itemid": [50912, 50912, 50912, 50931, 50912],
        "order_provider_id": [None] * 5,
        "charttime": [
            "2150-01-01 09:00:00",
            "2150-01-01 13:10:00",
            "2150-01-01 15:00:00",
            "2150-01-01 15:05:00",
            "2150-02-01 11:00:00",
        ],
        "storetime": [None] * 5,
        "value": ["1.2", "1.5", "2.0", "150", "0.9"],
        "valuenum": [1.2, 1.5, 2.0, 150.0, 0.9],
        "valueuom": ["mg/dL"] * 5,
        "ref_range_lower": [0.5] * 5,
        "ref_range_upper": [1.2] * 5,
        "flag": [None] * 5,
        "priority": ["STAT"] * 5,
        "comments": [None] * 5,
    }
)
OUTPUTEVENTS = pd.DataFrame(
    {
        "subject_id": [10000001] * 5,
        "hadm_id": [20000001] * 5,
        "stay_id": [30000001] * 5,
        "caregiver_id": [1] * 5,
        "charttime": [
            "2150-01-01 11:00:00",
            "2150-01-01 11:20:00",
            "2150-01-01 12:00:00",
            "2150-01-01 12:00:00",
            "2150-01-01 13:00:00",
        ],
        "storetime": [None] * 5,
        "itemid": [226559, 226560, 226559, 226588, 226559],  # 226588: chest tube, not urine
        "value": [100.0, 50.0, 200.0, 300.0, 5000.0],  # 5000 mL in one entry: implausible
        "valueuom": ["ml"] * 5,
    }
)
TABLES = {
    "hosp/patients": PATIENTS,
    "hosp/admissions": ADMISSIONS,
    "icu/icustays": ICUSTAYS,
    "icu/chartevents": CHARTEVENTS,
    "hosp/labevents": LABEVENTS,
    "icu/outputevents": OUTPUTEVENTS,
}
FEATURES = ["hr", "temp", "crea", "urine", "glu"]


def write_db(root, ext=".csv.gz", tables=TABLES):
    for name, df in tables.items():
        path = root / f"{name}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
    return root


@pytest.fixture
def db(tmp_path):
    return write_db(tmp_path / "mimiciv")


@pytest.mark.parametrize("binner", ["numpy", "numpy in 2-row slices", "numba"])
def test_hand_computed_bins(db, binner, monkeypatch):
    # small inputs are binned by numpy, large ones by the numba loop: both must give these bins,
    # and numpy must give them however finely it slices the row groups
    monkeypatch.setattr(ex, "NUMBA_MIN_ROWS", 0 if binner == "numba" else 10**12)
    monkeypatch.setattr(ex, "NUMPY_SLICE_ROWS", 2 if "slices" in binner else 1 << 18)
    cohort, attrition = extract(db, window_hours=6, features=FEATURES)
    assert cohort.stay_id.tolist() == [30000001, 30000005]
    assert cohort.subject_id.tolist() == [10000001, 10000005]
    assert cohort.label.tolist() == [0, 1]
    assert cohort.feature_names == FEATURES and cohort.series.shape == (2, 6, 5)
    expected = np.full((2, 6, 5), NAN)
    expected[0, :, 0] = [85, 100, NAN, NAN, NAN, 65]  # hr
    expected[0, :, 1] = [NAN, NAN, 37.2, NAN, NAN, NAN]  # temp (C)
    expected[0, :, 2] = [NAN, NAN, 1.5, NAN, 2.0, NAN]  # crea
    expected[0, :, 3] = [150, 200, NAN, NAN, NAN, NAN]  # urine, summed per hour
    expected[0, :, 4] = [NAN, NAN, NAN, NAN, 150, NAN]  # glu
    expected[1, 0, 0] = 110
    np.testing.assert_allclose(cohort.series, expected, rtol=1e-6, equal_nan=True)
    assert cohort.static_num_names == ["age", "height", "weight"]
    np.testing.assert_allclose(
        cohort.static_num, [[60, 177.8, 80.5], [52, NAN, NAN]], rtol=1e-6, equal_nan=True
    )
    cats = {
        n: [cohort.static_cat_vocab[j][k] for k in cohort.static_cat[:, j]]
        for j, n in enumerate(cohort.static_cat_names)
    }
    assert cats == {
        "gender": ["M", "F"],
        "admission_type": ["EW EMER.", "URGENT"],
        "first_careunit": ["Medical Intensive Care Unit (MICU)", "Coronary Care Unit (CCU)"],
        "insurance": ["Medicare", "Medicaid"],
    }
    assert all(v[0] == "<unknown>" for v in cohort.static_cat_vocab)
    assert attrition["icu_stays"] == 5
    assert attrition["excluded_age_below_min"] == 1
    assert attrition["excluded_died_in_window"] == 1
    assert attrition["excluded_stay_shorter_than_min"] == 1
    assert attrition["n_stays"] == 2 and attrition["n_positive"] == 1


def test_criteria_are_parameters(db):
    # a 12 h minimum stay keeps the 20 h stay; age 16 is allowed with min_age 16
    c = extract_cohort(db, window_hours=6, min_stay_hours=12, min_age=16, features=["hr"])
    assert c.stay_id.tolist() == [30000001, 30000002, 30000003, 30000005]
    assert c.series[1, 0, 0] == 120


def test_all_default_features(db):
    c = extract_cohort(db)
    assert c.series.shape == (2, 24, len(c.features)) and len(c.features) >= 15
    assert {f.kind for f in c.features} == {"vital", "lab", "output"}
    assert c.series[1, 1, c.feature_index("map")] == 65


def test_plain_csv_and_version_subfolder(tmp_path, db):
    root = write_db(tmp_path / "physionet" / "2.2", ext=".csv")
    a = extract_cohort(tmp_path / "physionet", window_hours=6, features=FEATURES)
    b = extract_cohort(db, window_hours=6, features=FEATURES)
    np.testing.assert_array_equal(a.series, b.series)
    assert (root / "icu" / "chartevents.csv").exists()


def test_missing_table_names_the_file_and_layout(db):
    (db / "hosp" / "labevents.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"hosp/labevents\.csv\.gz.*<root>/hosp"):
        extract_cohort(db)


def test_missing_column_names_column_and_file(tmp_path):
    tables = dict(TABLES, **{"icu/chartevents": CHARTEVENTS.drop(columns="valuenum")})
    root = write_db(tmp_path, tables=tables)
    with pytest.raises(ValueError, match=r"chartevents\.csv\.gz: column\(s\) valuenum missing"):
        extract_cohort(root)


def test_unknown_feature_lists_the_available_ones(db):
    with pytest.raises(KeyError, match=r"'heartrate'.*available: hr, sbp"):
        extract_cohort(db, features=["heartrate"])


def test_missing_root_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        extract_cohort(tmp_path / "nowhere")


@pytest.mark.parametrize("window, excluded", [(30, True), (6, False)])
def test_death_known_only_by_date(tmp_path, window, excluded):
    """Without admissions.deathtime, patients.dod (a day) excludes a stay when the death day is
    before the day the window ends; a death on that day is not known to be inside the window."""
    adm = ADMISSIONS.assign(deathtime=[None] * 5)
    root = write_db(tmp_path, tables=dict(TABLES, **{"hosp/admissions": adm}))
    c = extract_cohort(root, window_hours=window, min_stay_hours=0, features=["hr"])
    assert (30000004 not in c.stay_id.tolist()) == excluded


def test_events_cache_gives_the_same_cohort_and_is_reused(db, tmp_path, caplog, monkeypatch):
    import logging

    from src.data.mimiciv import extract as ex

    caplog.set_level(logging.INFO, logger="src.data")
    direct, _ = extract(db, window_hours=6, features=FEATURES)
    cached, _ = extract(db, window_hours=6, features=FEATURES, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(cached.series, direct.series)
    np.testing.assert_array_equal(cached.static_num, direct.static_num)
    assert len(list((tmp_path / "c" / "events").iterdir())) == 1
    # a second extraction with another window and feature set reads only the parquet cache
    monkeypatch.setattr(ex, "scan_table", lambda *a: pytest.fail("read the csv again"))
    monkeypatch.setattr(ex, "read_small_table", lambda *a: pytest.fail("read the csv again"))
    caplog.clear()
    again, _ = extract(db, window_hours=3, features=["hr"], cache_dir=tmp_path / "c")
    assert "events cache hit" in caplog.text
    monkeypatch.undo()
    expected, _ = extract(db, window_hours=3, features=["hr"])
    assert again.stay_id.tolist() == expected.stay_id.tolist() and len(again) == 3
    np.testing.assert_array_equal(again.series, expected.series)
    np.testing.assert_array_equal(again.static_num, expected.static_num)


def test_wrong_roots_name_the_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"hosp/patients\.csv\.gz.*v2\.2, v3\.0 and v3\.1"):
        extract_cohort(tmp_path / "empty")
    write_db(tmp_path / "two" / "2.2")
    write_db(tmp_path / "two" / "3.1")
    with pytest.raises(FileNotFoundError, match=r"several MIMIC-IV versions \(2\.2, 3\.1\)"):
        extract_cohort(tmp_path / "two")


def test_a_concept_fed_by_two_tables_and_a_second_day(tmp_path):
    """o2sat comes from chartevents and labevents: one hour bin averages both. A 30 h window
    reads the events cache's second day; a 6 h window from the same cache does not show it."""
    extra_ce = pd.DataFrame(
        _ce(
            30000001,
            10000001,
            20000001,
            [
                ("2150-01-01 10:45:00", 220277, 96.0, "%"),  # bin 0, chartevents
                ("2150-01-02 12:40:00", 220277, 90.0, "%"),  # bin 26: the second day
            ],
        ),
        columns=CE_COLS,
    )
    extra_le = LABEVENTS.iloc[:1].assign(
        itemid=50817, valuenum=92.0, charttime="2150-01-01 10:50:00"
    )
    root = write_db(
        tmp_path / "db",
        tables=dict(
            TABLES,
            **{
                "icu/chartevents": pd.concat([CHARTEVENTS, extra_ce]),
                "hosp/labevents": pd.concat([LABEVENTS, extra_le]),
            },
        ),
    )
    for cache in (None, tmp_path / "cache"):
        long, _ = extract(root, window_hours=30, features=["o2sat"], cache_dir=cache)
        row = long.stay_id.tolist().index(30000001)
        seen = {h: float(v) for h, v in enumerate(long.series[row, :, 0]) if v == v}
        assert seen == {0: 94.0, 26: 90.0}
        short, _ = extract(root, window_hours=6, features=["o2sat"], cache_dir=cache)
        row = short.stay_id.tolist().index(30000001)
        assert np.nansum(short.series[row]) == 94.0


def test_a_fraction_of_a_second_before_the_hour_stays_in_its_bin(tmp_path):
    """Bins compare whole seconds after intime, rounded down: 0:59:59.6 after intime is bin 0."""
    late = pd.DataFrame(
        _ce(30000001, 10000001, 20000001, [("2150-01-01 11:29:59.600", 220045, 70.0, "bpm")]),
        columns=CE_COLS,
    )
    root = write_db(
        tmp_path / "db", tables=dict(TABLES, **{"icu/chartevents": pd.concat([CHARTEVENTS, late])})
    )
    c, _ = extract(root, window_hours=6, features=["hr"])
    assert c.series[0, :2, 0].tolist() == [80.0, 100.0]  # (80 + 90 + 70) / 3, then bin 1 as before


def test_numba_and_numpy_binning_agree_row_for_row():
    """The two binners on random rows with everything that must be skipped or kept: excluded
    stays, rows past the window, concepts outside the feature set, several values per bin and
    static ties (the first row wins)."""
    rng = np.random.default_rng(0)
    n_rows, n_all, n, n_t, n_f, n_s = 20_000, 50, 30, 6, 4, 2
    pos_of = np.full(n_all, -1, np.int64)
    pos_of[rng.choice(n_all, n, replace=False)] = np.arange(n)
    feat = np.array([0, 1, -1, 3, 2, -1], np.int64)  # per concept (-1: not in the feature set)
    stat = np.array([-1, -1, 0, 1, 1, -1], np.int64)  # concept 5 is neither: never added
    cols = (
        rng.integers(0, n_all, n_rows).astype(np.int32),
        rng.integers(0, 6, n_rows).astype(np.int16),
        (rng.integers(0, 9, n_rows) * 1800).astype(np.int32),  # ties in time, past 6 h too
        rng.random(n_rows).astype(np.float32),
    )

    def bin_numpy(*args):  # the two halves as dense_from_events runs them, with the loop's args
        *cols, pos_of, feat, stat, n_t, n_f, n_s, sums, counts, first_dt, first_v = args
        tables = ex._numpy_tables(pos_of, feat, stat, n_t, n_f)
        prepared = ex._prepare_numpy(*cols, *tables, n_t, n_f, n_s)
        return ex._add_numpy(prepared, sums, counts, first_dt, first_v)

    results = []
    for binner in (bin_numpy, ex._bin_kernel()):
        out = (
            np.zeros(n * n_t * n_f, np.float32),
            np.zeros(n * n_t * n_f, np.uint16),
            np.full(n * n_s, np.iinfo(np.int64).max),
            np.full(n * n_s, np.nan),
        )
        added = 0
        for a in range(0, n_rows, 7_000):  # in batches, as row groups come
            batch = [c[a : a + 7_000] for c in cols]
            added += binner(*batch, pos_of, feat, stat, n_t, n_f, n_s, *out)
        results.append((*out, added))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)
    sums, counts, first_dt, _, added = results[0]
    assert counts.sum() == added and added > 1000
    assert (counts > 1).any() and (first_dt < 6 * 3600).sum() > 10


def test_binning_compiles_without_a_writable_cache(monkeypatch):
    """numba refuses cache=True where no folder is writable (read-only install, no home): the
    kernel is then compiled for the run instead of failing the extraction."""
    import numba

    njit = numba.njit

    def no_cache_folder(*args, **kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return njit(*args, **kw)

    monkeypatch.setattr(numba, "njit", no_cache_folder)
    kernel = ex._bin_kernel.__wrapped__()
    out = (np.zeros(2, np.float32), np.zeros(2, np.uint16), np.full(1, 99), np.full(1, np.nan))
    i4 = np.zeros(1, np.int32)
    n = kernel(i4, np.zeros(1, np.int16), i4, np.array([0.5], np.float32), np.array([0]),
               np.array([0]), np.array([-1]), 1, 2, 1, *out)  # fmt: skip
    assert n == 1 and out[0][0] == 0.5 and out[1][0] == 1


def test_stays_table_joins_by_key_and_keeps_every_icu_stay(tmp_path):
    """stays.parquet's left join by key lookup: every ICU stay once, in
    stay_id order with nulls last; a stay without its admission or patient keeps its row with
    nulls and says so; an empty field is null, quoted or not."""
    icu = pd.DataFrame(
        {
            "subject_id": [10000001, 10000009, 10000002],
            "hadm_id": pd.array([20000001, 20000009, None], "Int64"),
            "stay_id": pd.array([None, 30000002, 30000001], "Int64"),
            "first_careunit": ["MICU", "", "CCU"],
            "intime": ["2150-01-01 10:30:00"] * 3,
            "outtime": ["2150-01-04 10:30:00"] * 3,
        }
    )
    root = write_db(tmp_path, tables=dict(TABLES, **{"icu/icustays": icu}))
    pat = root / "hosp" / "patients.csv.gz"
    pat.write_bytes(
        gzip.compress(gzip.decompress(pat.read_bytes()).replace(b"10000001,M,", b'10000001,"",'))
    )
    headers = {n: ex.checked_header(root, n) for n in ("icustays", "admissions", "patients")}
    small = {n: ex.read_small_table(root, n, h) for n, h in headers.items()}
    got = ex.stays_table(small["icustays"], small["admissions"], small["patients"]).to_pylist()
    assert [r["stay_id"] for r in got] == [30000001, 30000002, None]
    assert [r["sidx"] for r in got] == [0, 1, 2]
    assert [(r["has_adm"], r["has_pat"]) for r in got] == [
        (False, True),
        (False, False),
        (True, True),
    ]
    assert got[0]["gender"] == "F" and got[0]["label"] is None and got[0]["insurance"] is None
    assert got[1]["first_careunit"] is None and got[1]["anchor_age"] is None
    assert got[2]["gender"] is None  # quoted empty
    assert (got[2]["insurance"], got[2]["label"]) == ("Medicare", 0)
    assert str(got[2]["dod"]) == "None" and str(got[2]["intime"]) == "2150-01-01 10:30:00"


@pytest.mark.parametrize(
    "table, key",
    [("hosp/admissions", "hadm_id"), ("hosp/patients", "subject_id"), ("icu/icustays", "stay_id")],
)
def test_a_duplicated_key_is_named_before_the_events_pass(tmp_path, table, key, monkeypatch):
    df = TABLES[table]
    root = write_db(tmp_path, tables=dict(TABLES, **{table: pd.concat([df, df.iloc[:1]])}))
    monkeypatch.setattr(ex, "scan_table", lambda *a: pytest.fail("scanned the events"))
    with pytest.raises(ValueError, match=rf"MIMIC-IV {table.split('/')[1]} has a duplicated {key}"):
        extract_cohort(root)


def test_the_logged_missing_share_is_the_cohorts(db, caplog):
    """dense_from_events counts the empty cells as it divides; the log must say what
    Cohort.summary() computes from the finished array."""
    import logging
    import re

    caplog.set_level(logging.INFO, logger="src.data")
    c = extract_cohort(db, window_hours=6, features=FEATURES)
    logged = float(re.findall(r"missing ([0-9.]+)", caplog.text)[-1])
    assert 0 < logged < 1 and logged == round(c.summary()["missing_share"], 3)


@pytest.mark.parametrize(
    "values",
    [["b", None, "a", "", "b", " "], [None, None], [], ["é", "e", "Z", "e"]],
)
def test_categories_from_arrow_match_encode_categories(values):
    """The extractor codes its string columns in Arrow; the codes and vocabulary must be the
    ones encode_categories gives (the YAIB reader and the tests use that)."""
    import pyarrow as pa

    from src.data.cohort import encode_categories

    codes, vocab = ex._categories(pa.chunked_array([pa.array(values, pa.string())], pa.string()))
    want_codes, want_vocab = encode_categories(values)
    assert vocab == want_vocab and codes.dtype == want_codes.dtype
    assert codes.tolist() == want_codes.tolist()


@pytest.mark.parametrize("binner", ["numpy", "numba"])
def test_a_bin_with_more_values_than_8_bits_count(tmp_path, binner, monkeypatch, caplog):
    """Counts are 8 bits; 300 values in one bin wrap them, and binning runs again wider."""
    import logging

    monkeypatch.setattr(ex, "NUMBA_MIN_ROWS", 0 if binner == "numba" else 10**12)
    values = [80.0] * 256 + [100.0] * 44
    busy = pd.DataFrame(
        _ce(
            30000001,
            10000001,
            20000001,
            [
                (f"2150-01-01 12:{40 + k // 60:02d}:{k % 60:02d}", 220045, v, "bpm")
                for k, v in enumerate(values)
            ],
        ),
        columns=CE_COLS,
    )
    root = write_db(
        tmp_path / "db", tables=dict(TABLES, **{"icu/chartevents": pd.concat([CHARTEVENTS, busy])})
    )
    caplog.set_level(logging.INFO, logger="src.data")
    c, _ = extract(root, window_hours=6, features=["hr"])
    assert c.series[0, :, 0].tolist()[:3] == [85.0, 100.0, np.float32(24880) / np.float32(300)]
    assert "binning again with" in caplog.text


def test_a_damaged_small_table_names_the_file(db):
    """icustays, admissions and patients are read whole, with the events tables' error rule."""
    path = db / "hosp" / "patients.csv.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(
        ValueError, match=r"patients\.csv\.gz: cannot be read as a MIMIC-IV patients"
    ):
        extract(db, window_hours=6, features=["hr"])

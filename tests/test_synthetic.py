"""The synthetic MIMIC-IV: deterministic, MIMIC-IV-shaped, and realistic enough to learn from."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest

from src.data.mimiciv import schema
from src.data.mimiciv.extract import extract
from src.data.mimiciv.synthetic import generate

# Column names and order of MIMIC-IV v2.2 (docs/reference/mimiciv_demo_preview/preview.txt)
MIMIC_COLUMNS = {
    "hosp/patients": "subject_id gender anchor_age anchor_year anchor_year_group dod",
    "hosp/admissions": "subject_id hadm_id admittime dischtime deathtime admission_type "
    "admit_provider_id admission_location discharge_location insurance "
    "language marital_status race edregtime edouttime hospital_expire_flag",
    "hosp/labevents": "labevent_id subject_id hadm_id specimen_id itemid order_provider_id "
    "charttime storetime value valuenum valueuom ref_range_lower "
    "ref_range_upper flag priority comments",
    "hosp/d_labitems": "itemid label fluid category",
    "icu/icustays": "subject_id hadm_id stay_id first_careunit last_careunit intime outtime los",
    "icu/chartevents": "subject_id hadm_id stay_id caregiver_id charttime storetime itemid value "
    "valuenum valueuom warning",
    "icu/d_items": "itemid label abbreviation linksto category unitname param_type "
    "lownormalvalue highnormalvalue",
    "icu/outputevents": "subject_id hadm_id stay_id caregiver_id charttime storetime itemid value "
    "valueuom",
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "a"
    generate(root, n_stays=300, seed=7)
    return root


def _read(root, name, **kw):
    return pd.read_csv(root / f"{name}.csv.gz", **kw)


def test_same_seed_same_bytes_other_seed_other_bytes(small, tmp_path):
    generate(tmp_path / "b", n_stays=300, seed=7)
    generate(tmp_path / "c", n_stays=300, seed=8)
    for name in MIMIC_COLUMNS:
        same = (tmp_path / "b" / f"{name}.csv.gz").read_bytes()
        assert same == (small / f"{name}.csv.gz").read_bytes(), name
    for name in ("icu/chartevents", "hosp/labevents", "icu/icustays", "hosp/patients"):
        other = (tmp_path / "c" / f"{name}.csv.gz").read_bytes()
        assert other != (small / f"{name}.csv.gz").read_bytes(), name


def test_background_writing_gives_the_bytes_of_writing_in_line(small, tmp_path, monkeypatch):
    from concurrent.futures import Future

    from src.data.mimiciv import synthetic

    class InLine:  # runs each task at once, on the calling thread
        def submit(self, fn, *args):
            f = Future()
            f.set_result(fn(*args))
            return f

        def shutdown(self, wait=True):
            pass

    init = synthetic._GzCsv.__init__

    def in_line_init(self, path):
        init(self, path)
        self._compress = InLine()

    monkeypatch.setattr(synthetic._GzCsv, "_format", InLine())
    monkeypatch.setattr(synthetic._GzCsv, "__init__", in_line_init)
    monkeypatch.setattr(synthetic, "CHUNK_STAYS", 50)  # several pieces per file
    generate(tmp_path / "inline", n_stays=300, seed=7)
    monkeypatch.undo()
    monkeypatch.setattr(synthetic, "CHUNK_STAYS", 50)
    generate(tmp_path / "threads", n_stays=300, seed=7)
    for name in MIMIC_COLUMNS:
        a = (tmp_path / "inline" / f"{name}.csv.gz").read_bytes()
        assert a == (tmp_path / "threads" / f"{name}.csv.gz").read_bytes(), name


def test_tables_have_mimiciv_columns_in_order(small):
    for name, cols in MIMIC_COLUMNS.items():
        with gzip.open(small / f"{name}.csv.gz", "rt") as fh:
            assert fh.readline().strip().split(",") == cols.split(), name


def test_ids_dates_and_structure_look_like_mimiciv(small):
    stays = _read(small, "icu/icustays", parse_dates=["intime", "outtime"])
    pats = _read(small, "hosp/patients")
    adm = _read(small, "hosp/admissions")
    assert len(stays) == 300 and stays.stay_id.is_unique
    assert stays.subject_id.between(10_000_000, 19_999_999).all()
    assert stays.hadm_id.between(20_000_000, 29_999_999).all()
    assert stays.stay_id.between(30_000_000, 39_999_999).all()
    assert stays.intime.dt.year.between(2110, 2210).all()
    assert pats.anchor_year.between(2110, 2210).all()
    assert (stays.groupby("subject_id").size() > 1).any(), "some patients have several stays"
    assert (pats.anchor_age < 18).any(), "some minors, for the age exclusion"
    assert set(adm.hospital_expire_flag) == {0, 1}
    died = adm[adm.hospital_expire_flag == 1]
    assert (
        died.deathtime.notna().all() and adm[adm.hospital_expire_flag == 0].deathtime.isna().all()
    )
    assert (stays.los * 24 < 30).any(), "some stays shorter than the minimum"
    # labs join by subject and time only, as in MIMIC-IV
    assert "stay_id" not in _read(small, "hosp/labevents", nrows=1).columns


def test_itemids_units_and_charting_times(small):
    ce = _read(small, "icu/chartevents", parse_dates=["charttime"])
    d_items = _read(small, "icu/d_items")
    lab = _read(small, "hosp/labevents")
    d_lab = _read(small, "hosp/d_labitems")
    out = _read(small, "icu/outputevents")
    assert set(ce.itemid) <= set(d_items.itemid) and set(out.itemid) <= set(d_items.itemid)
    assert set(lab.itemid) <= set(d_lab.itemid)
    units = ce.groupby("itemid").valueuom.first()
    assert units[220045] == "bpm" and units[223761] == "°F" and units[223762] == "°C"
    concept_items = {s.itemid for c in schema.CONCEPTS for s in c.sources}
    assert (
        {220045, 220179, 223761, 220277}
        <= set(ce.itemid)
        <= concept_items | {220048, 226512, 226707, 226730}
    )
    assert {50912, 51006, 50813, 51301} <= set(lab.itemid)
    assert 226559 in set(out.itemid)
    # Fahrenheit values really are Fahrenheit
    assert ce[ce.itemid == 223761].valuenum.median() > 90
    # charting: not all on the clock hour, and sometimes twice in one hour
    hr = ce[ce.itemid == 220045]
    assert 0.05 < (hr.charttime.dt.minute != 0).mean() < 0.9
    per_hour = hr.groupby([hr.stay_id, hr.charttime.dt.floor("h")]).size()
    assert (per_hour > 1).any()


def test_chunked_generation_keeps_tables_sorted_and_ids_unique(tmp_path, monkeypatch):
    from src.data.mimiciv import synthetic

    monkeypatch.setattr(synthetic, "CHUNK_STAYS", 100)  # 300 stays in several chunks
    generate(tmp_path, n_stays=300, seed=7)
    ce = _read(tmp_path, "icu/chartevents", usecols=["subject_id", "stay_id", "charttime"])
    assert ce.subject_id.is_monotonic_increasing
    assert len(ce.stay_id.unique()) > 250
    lab = _read(
        tmp_path, "hosp/labevents", usecols=["labevent_id", "subject_id", "specimen_id", "itemid"]
    )
    assert lab.subject_id.is_monotonic_increasing
    assert lab.labevent_id.tolist() == list(range(1, len(lab) + 1))
    assert not lab.duplicated(["specimen_id", "itemid"]).any()


# --- realism on the default-size cohort ----------------------------------------------------
def lr_auroc_on_means(cohort, seed: int = 0) -> float:
    """Logistic regression on per-feature window means (+ age), split by subject."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN features of a stay
        x = np.nanmean(cohort.series, axis=1)
    x = np.column_stack([x, cohort.static_num[:, cohort.static_num_names.index("age")]])
    tr, te = next(
        GroupShuffleSplit(1, test_size=0.3, random_state=seed).split(
            x, cohort.label, cohort.subject_id
        )
    )
    mu = np.nanmean(x[tr], axis=0)
    x = np.where(np.isnan(x), mu, x)
    x = (x - mu) / (x[tr].std(axis=0) + 1e-6)
    model = LogisticRegression(max_iter=2000).fit(x[tr], cohort.label[tr])
    return float(roc_auc_score(cohort.label[te], model.predict_proba(x[te])[:, 1]))


def reference_table() -> dict[str, dict[str, float]]:
    """Real hourly statistics per feature, read from docs/reference/icu_value_distributions.md
    (the YAIB MIMIC demo): count, mean, std, 5%, 50%, 95%, miss, mean_y0, mean_y1."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs/reference/icu_value_distributions.md").read_text()
    cols = ["count", "mean", "std", "p5", "p50", "p95", "miss", "mean_y0", "mean_y1"]
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 10 and parts[0][0].isalpha() and parts[0] != "count":
            try:
                out[parts[0]] = dict(zip(cols, map(float, parts[1:]), strict=True))
            except ValueError:
                continue
    return out


VITALS = ("hr", "sbp", "dbp", "map", "resp", "o2sat", "temp")
SIGNAL_LABS = ("crea", "bun", "lact", "bili")  # higher in deaths, in real data and here
WELL_MEASURED = 150  # reference features with at least this many values get the tight bands


@pytest.fixture(scope="module")
def default_cohort(tmp_path_factory):
    from src.config import DataSchema

    root = tmp_path_factory.mktemp("default")
    generate(root, n_stays=DataSchema().n_stays, seed=0)
    return extract(root)


@pytest.mark.slow
def test_default_cohort_is_mimiciv_sized_with_real_prevalence(default_cohort):
    cohort, attrition = default_cohort
    assert len(cohort) >= 40_000, "MIMIC-IV scale by default"
    assert 0.09 <= cohort.label.mean() <= 0.14  # MIMIC-IV: about 11.7%
    assert len(cohort.feature_names) == 48 and set(cohort.feature_names) <= set(
        reference_table()
    ) | {"fio2", "crp"}
    for key in (
        "excluded_age_below_min",
        "excluded_died_in_window",
        "excluded_stay_shorter_than_min",
    ):
        assert attrition[key] > 0, key


@pytest.mark.slow
def test_default_cohort_marginals_match_real_icu_data(default_cohort):
    cohort, _ = default_cohort
    ref = reference_table()
    checked = 0
    for j, f in enumerate(cohort.feature_names):
        if f not in ref or ref[f]["count"] < 10:
            continue
        v = cohort.series[:, :, j]
        miss, vals = float(np.isnan(v).mean()), v[~np.isnan(v)]
        r = ref[f]
        assert abs(miss - r["miss"]) <= 0.05, (f, "missing share", miss, r["miss"])
        p50 = float(np.median(vals))
        if r["count"] >= WELL_MEASURED:
            mean, sd, p95 = float(vals.mean()), float(vals.std()), float(np.percentile(vals, 95))
            assert abs(mean - r["mean"]) <= 0.25 * r["std"], (f, "mean", mean, r["mean"])
            assert 0.6 <= sd / r["std"] <= 1.5, (f, "sd", sd, r["std"])
            assert abs(p95 - r["p95"]) <= 0.6 * r["std"], (f, "95%", p95, r["p95"])
        else:  # a few dozen real values: the median only, within a factor 1.5
            assert abs(np.log(max(p50, 1e-3) / max(r["p50"], 1e-3))) <= np.log(1.5), (f, p50)
        checked += 1
    assert checked >= 40
    # heavy lab tails: as heavy as the real ones (bilirubin SD 5.75 on a mean of 3.3)
    for f in ("bili", "ck", "alt", "ast"):
        vals = cohort.series[:, :, cohort.feature_names.index(f)]
        vals = vals[~np.isnan(vals)]
        assert vals.std() / vals.mean() >= 1.5, (f, vals.std(), vals.mean())


def single_feature_auroc(cohort, name: str) -> float:
    from sklearn.metrics import roc_auc_score

    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x = np.nanmean(cohort.series[:, :, cohort.feature_names.index(name)], axis=1)
    seen = ~np.isnan(x)
    return float(roc_auc_score(cohort.label[seen], x[seen]))


@pytest.mark.slow
def test_labs_carry_the_label_signal_and_vitals_little(default_cohort):
    cohort, _ = default_cohort
    for f in VITALS:
        assert 0.42 <= single_feature_auroc(cohort, f) <= 0.58, f
    for f in SIGNAL_LABS:
        assert single_feature_auroc(cohort, f) >= 0.60, f
    assert single_feature_auroc(cohort, "plt") <= 0.40  # low platelets in deaths
    assert single_feature_auroc(cohort, "alb") <= 0.40
    auc = lr_auroc_on_means(cohort, seed=0)
    assert 0.78 <= auc <= 0.90, auc


@pytest.mark.slow
def test_the_paper_grids_smallest_rate_poisons_rows_of_the_default_cohort(default_cohort):
    # +sweep=paper's rates go down to 1e-4; at the default size that is still a few rows
    import yaml

    from src.experiment import build_datamodule
    from tests.cli import ROOT
    from tests.conftest import compose_config

    grid = yaml.safe_load((ROOT / "conf/sweep/paper.yaml").read_text())["hydra"]["sweeper"]
    smallest = min(float(r) for r in str(grid["params"]["poison_rate"]).split(",") if float(r) > 0)
    assert smallest == 1e-4
    dm = build_datamodule(compose_config(f"poison_rate={smallest}"), default_cohort[0])
    dm.setup()
    assert dm.poisoned.n_poisoned >= 2
    assert dm.poisoned.n_poisoned == round(smallest * dm.poisoned.n_eligible)

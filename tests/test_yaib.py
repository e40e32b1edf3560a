"""YAIB / ricu cohorts: a hand-made folder checked bin by bin, and YAIB's real Mortality24 MIMIC
demo (ODbL, in tests/data/yaib with its licence and notice; never printed row by row) read and
run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.data.sources import cohort_key, load_cohort, load_cohort_with_attrition
from src.data.yaib import load_yaib

DEMO_REL = Path("tests") / "data" / "yaib" / "mortality24" / "mimic_demo"  # from the repo root
DEMO = Path(__file__).resolve().parents[1] / DEMO_REL
H = pd.Timedelta(hours=1)


def write_yaib(path: Path, dyn=None, sta=None, outc=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if dyn is None:
        dyn = pd.DataFrame(
            {
                "stay_id": [7, 7, 7, 7, 5, 5, 9],
                "time": [-1 * H, 0 * H, 0.5 * H, 3 * H, 0 * H, 1 * H, 0 * H],
                "hr": [60.0, 80.0, 90.0, 70.0, np.nan, 100.0, 110.0],
                "foo": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0],
            }
        )
    if sta is None:
        sta = pd.DataFrame(
            {
                "stay_id": [5, 7, 9],
                "age": [70.0, 50.5, 33.0],
                "sex": ["Female", "Male", None],
                "weight": [80.0, np.nan, 60.0],
            }
        )
    if outc is None:
        outc = pd.DataFrame({"stay_id": [7, 5], "label": [1, 0]})  # 9 has no outcome
    for name, df in (("dyn", dyn), ("sta", sta), ("outc", outc)):
        df.to_parquet(path / f"{name}.parquet")
    return path


def test_hand_made_cohort_bins(tmp_path):
    c, attrition = load_yaib(write_yaib(tmp_path / "y"), window_hours=3)
    assert c.stay_id.tolist() == [5, 7] and c.subject_id.tolist() == [5, 7]
    assert c.label.tolist() == [0, 1]
    assert c.feature_names == ["hr", "foo"] and c.series.shape == (2, 3, 2)
    nan = np.nan
    expected = np.array(
        [[[nan, 5], [100, 6], [nan, nan]], [[85, 2], [nan, nan], [nan, nan]]]
    )  # 3 h row and -1 h row dropped
    np.testing.assert_allclose(c.series, expected, equal_nan=True)
    assert c.static_num_names == ["age", "weight"] and c.static_cat_names == ["sex"]
    np.testing.assert_allclose(c.static_num, [[70, 80], [50.5, nan]], equal_nan=True)
    assert [c.static_cat_vocab[0][k] for k in c.static_cat[:, 0]] == ["Female", "Male"]
    hr = c.features[0]
    assert (hr.unit, hr.low, hr.high, hr.kind) == ("bpm", 0, 300, "vital")  # MIMIC-IV concept
    assert c.features[1].unit == "" and c.features[1].low is None
    assert attrition["icu_stays"] == 3 and attrition["excluded_not_in_all_files"] == 1
    assert attrition["dyn_rows_outside_window"] == 2 and attrition["n_stays"] == 2


def test_feature_subset_and_errors(tmp_path):
    root = write_yaib(tmp_path / "y")
    c, _ = load_yaib(root, window_hours=2, features=["foo"])
    assert c.feature_names == ["foo"] and c.series.shape == (2, 2, 1)
    with pytest.raises(KeyError, match=r"'heartrate' not in the YAIB cohort.*available: hr, foo"):
        load_yaib(root, features=["heartrate"])
    (root / "outc.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"outc\.parquet not found.*holds dyn\.parquet"):
        load_yaib(root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_yaib(tmp_path / "nowhere")


def test_bad_columns_are_named(tmp_path):
    dyn = pd.DataFrame({"stay_id": [1], "hours": [0.0], "hr": [80.0]})
    with pytest.raises(ValueError, match=r"dyn\.parquet: column\(s\) time missing"):
        load_yaib(write_yaib(tmp_path / "a", dyn=dyn))
    outc = pd.DataFrame({"stay_id": [5, 7], "los": [3, 2]})
    with pytest.raises(ValueError, match=r"outc\.parquet: column los holds \[2, 3\]"):
        load_yaib(write_yaib(tmp_path / "b", outc=outc))


def test_load_cohort_caches_yaib_by_path_window_and_features(tmp_path):
    root = write_yaib(tmp_path / "y")
    cfg = {
        "source": "yaib",
        "path": str(root),
        "window_hours": 3,
        "features": None,
        "batch_size": 8,
    }
    c, attrition = load_cohort_with_attrition(cfg, tmp_path / "cache")
    assert c.series.shape == (2, 3, 2) and attrition["n_stays"] == 2
    assert (tmp_path / "cache" / "cohorts" / cohort_key(cfg)).is_dir()
    assert cohort_key(dict(cfg, batch_size=99)) == cohort_key(cfg)
    assert cohort_key(dict(cfg, window_hours=2)) != cohort_key(cfg)
    assert cohort_key(dict(cfg, features=["hr"])) != cohort_key(cfg)
    np.testing.assert_array_equal(load_cohort(cfg, tmp_path / "cache").series, c.series)


def test_demo_cohort_matches_the_parquet_files():
    c, attrition = load_yaib(DEMO, window_hours=24)
    dyn = pd.read_parquet(DEMO / "dyn.parquet")
    outc = pd.read_parquet(DEMO / "outc.parquet").set_index("stay_id").sort_index()
    n_feat = dyn.shape[1] - 2
    assert c.series.shape == (outc.shape[0], 24, n_feat)
    assert c.stay_id.tolist() == outc.index.tolist()
    np.testing.assert_array_equal(c.label, outc["label"].to_numpy())
    # every in-window cell equals the parquet's value for that stay and hour
    win = dyn[dyn["time"] < 24 * H]
    hours = (win["time"] / H).astype(int).to_numpy()
    rows = np.searchsorted(c.stay_id, win["stay_id"].to_numpy())
    for name in ("hr", "temp", "lact", "urine"):
        np.testing.assert_allclose(
            c.series[rows, hours, c.feature_index(name)],
            win[name].to_numpy(),
            rtol=1e-6,
            equal_nan=True,
        )
    assert attrition["dyn_rows_outside_window"] == int((dyn["time"] >= 24 * H).sum())
    assert c.static_num_names == ["age", "height", "weight"] and c.static_cat_names == ["sex"]
    assert set(c.static_cat_vocab[0][1:]) == {"Female", "Male"}
    assert c.features[c.feature_index("temp")].unit == "C"


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["trigger=out_of_bounds", "trigger.feature=hr"]])
def test_demo_runs_end_to_end(extra, tmp_path):
    from tests.test_cli import run_cli

    p = run_cli(
        "data=yaib",
        f"data.path={DEMO_REL}",
        "experiment=smoke",
        "detectors=none",
        *extra,
        cache=tmp_path / "cache",
        out=tmp_path / "run",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["status"] == "ok" and r["data"]["n_stays"] == 99 and r["data"]["n_hours"] == 24
    n = r["counts"]
    assert n["n_train"] + n["n_val"] + n["n_test"] == 99 and n["n_poisoned"] > 0
    if extra:
        assert r["config"]["trigger"]["feature"] == "hr"


@pytest.mark.slow
def test_a_backdoor_trained_on_the_synthetic_source_is_evaluated_on_the_yaib_demo(tmp_path):
    """Cross-hospital transfer: the model and trigger of a synthetic run, on the real demo
    cohort; the demo given only two features, so the others are not measured there."""
    from tests.test_cli import run_cli

    p = run_cli(
        "experiment=smoke",
        "detectors=none",
        "trigger=out_of_bounds",
        "eval_data=yaib",
        f"eval_data.path={DEMO_REL}",
        "eval_data.features=[hr,sbp]",
        cache=tmp_path / "cache",
        out=tmp_path / "run",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    t = r["transfer"]
    assert t["source"] == "yaib" and t["n_stays"] == 99
    assert "resp" in t["alignment"]["missing_features"]
    assert "hr" not in t["alignment"]["missing_features"] and t["trigger_features_missing"] == []
    assert 0.0 <= t["clean"]["auroc"] <= 1.0 and t["attack"]["n"] == 99 - round(0.212 * 99)
    assert "transfer yaib (99 stays" in p.stdout

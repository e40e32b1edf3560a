"""src/report.py on hand-made sweep folders: one row per job, failures listed, t-intervals computed
by hand, figures and report.md written."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from src.report import build_report, cell_keys, fmt_ci, summary_table, t_interval

ROOT = Path(__file__).resolve().parents[1]
T975 = {1: 12.7062047, 2: 4.3026527}  # t quantile 0.975 for 1 and 2 degrees of freedom (table)


def results(
    trigger="rare_value",
    model="mlp",
    rate=0.1,
    seed=0,
    asr=0.5,
    base=0.1,
    auroc=0.8,
    detection=None,
    status="ok",
    error=None,
    extra_overrides=(),
) -> dict:
    overrides = [
        f"trigger={trigger}",
        f"model={model}",
        f"poison_rate={rate}",
        f"seed={seed}",
        *extra_overrides,
        "paths.cache_dir=/somewhere",
    ]
    ok = status == "ok"
    return {
        "schema_version": "1.0",
        "status": status,
        "error": error,
        "config": {
            "choices": {
                "trigger": trigger,
                "model": model,
                "data": "synthetic",
                "hydra": "default",
            },
            "overrides": overrides,
            "seed": seed,
            "poison_rate": rate,
            "poison_mode": "dirty",
            "target_label": 1,
            "fingerprint": "abc",
            "trigger": {"name": trigger, "hours": [18, 24]},
        },
        "environment": {"python": "3.11"},
        "data": {"n_stays": 500, "prevalence": 0.1},
        "trigger": {"name": trigger, "feature": "resp", "hours": [18, 24]} if ok else None,
        "counts": {"n_train": 350, "n_eligible": 350, "n_poisoned": round(rate * 350)},
        "clean": {"auroc": auroc, "auprc": 0.4, "accuracy": 0.9, "ece": 0.05, "n": 100}
        if ok
        else None,
        "attack": {"asr": asr, "base_rate": base, "asr_lift": asr - base, "n": 90} if ok else None,
        "detection": detection,
        "stealth": {"share_out_of_range": 0.0} if ok else None,
        "timings": {"total_s": 3.0},
    }


def write_job(sweep: Path, num: int, r: dict | None, overrides: list[str] | None = None) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    ov = overrides if overrides is not None else r["config"]["overrides"]
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ov))
    if r is not None:
        (job / "results.json").write_text(json.dumps(r))
    return job


@pytest.fixture
def sweep(tmp_path):
    """2 triggers x 2 models x 2 rates x 3 seeds, detection for the MLP, one failed job and one
    job that never wrote results.json."""
    d = tmp_path / "sweep"
    num = 0
    for trigger in ("rare_value", "pattern"):
        for model in ("mlp", "lstm"):
            for rate in (0.0, 0.1):
                for seed in range(3):
                    asr = {0: 0.2, 1: 0.4, 2: 0.6}[seed] if trigger == "pattern" else 0.9
                    if rate == 0:  # the clean model: the trigger alone moves it a little
                        asr = 0.05 * (seed + 1)
                    det = (
                        {
                            "spectral_signature": {"auroc": 0.6 + 0.1 * seed, "ap": 0.3},
                            "strip": {"auroc": None if seed == 2 else 0.5, "ap": 0.1},
                        }
                        if model == "mlp" and rate > 0
                        else None
                    )
                    write_job(d, num, results(trigger, model, rate, seed, asr=asr, detection=det))
                    num += 1
    write_job(
        d,
        num,
        results(
            "rare_value",
            "mlp",
            0.01,
            0,
            status="failed",
            error={
                "type": "RuntimeError",
                "message": "out of | memory",
                "traceback": "Traceback ... line 1",
            },
        ),
    )
    write_job(
        d, num + 1, None, overrides=["trigger=pattern", "model=mlp", "poison_rate=0.01", "seed=0"]
    )
    write_job(  # a fourth seed of an existing cell that failed: dropped, and named
        d,
        num + 2,
        results("pattern", "lstm", 0.1, 3, status="failed", error={"type": "E", "message": "x"}),
    )
    return d


def test_t_interval_matches_a_hand_computation():
    s = t_interval([0.2, 0.4, 0.6])  # mean 0.4, sd 0.2, half = t(2) * 0.2 / sqrt(3)
    half = T975[2] * 0.2 / math.sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.4) and s["sd"] == pytest.approx(0.2)
    assert s["ci_low"] == pytest.approx(0.4 - half, abs=1e-6)
    assert s["ci_high"] == pytest.approx(0.4 + half, abs=1e-6)
    s = t_interval([0.5, 0.7, float("nan")])  # NaN left out: n = 2, half = t(1) * sd / sqrt(2)
    assert s["n"] == 2
    assert s["ci_high"] - s["mean"] == pytest.approx(T975[1] * 0.1, abs=1e-6)


def test_one_seed_has_no_interval_and_says_so():
    s = t_interval([0.7])
    assert s["n"] == 1 and s["mean"] == 0.7
    assert math.isnan(s["ci_low"]) and math.isnan(s["ci_high"])
    assert fmt_ci(s) == "0.700 (n=1)"
    assert fmt_ci(t_interval([])) == "–"


def test_summary_has_one_row_per_job_with_failed_and_missing_ones(sweep):
    out = build_report(sweep)
    df = pd.read_csv(out["summary_csv"])
    assert len(df) == 2 * 2 * 2 * 3 + 3
    assert df["status"].value_counts().to_dict() == {"ok": 24, "failed": 2, "missing": 1}
    failed = df[df["status"] == "failed"].iloc[0]
    assert failed["error_type"] == "RuntimeError" and "out of | memory" in failed["error"]
    missing = df[df["status"] == "missing"].iloc[0]
    assert missing["trigger"] == "pattern" and missing["poison_rate"] == 0.01
    for col in (
        "trigger",
        "model",
        "seed",
        "poison_rate",
        "overrides",
        "counts.n_poisoned",
        "clean.auroc",
        "attack.asr",
        "attack.asr_lift",
        "detection.strip.auroc",
        "stealth.share_out_of_range",
        "timings.total_s",
        "trigger.hours",
    ):
        assert col in df.columns, col
    assert not any("traceback" in c or c.startswith("environment") for c in df.columns)
    pq = pd.read_parquet(out["summary_parquet"])
    assert len(pq) == len(df) and list(pq.columns) == list(df.columns)
    assert out["n_failed"] == 3 and out["n_ok"] == 24


def test_cells_hold_mean_and_t_interval_over_seeds(sweep):
    out = build_report(sweep)
    cells = pd.read_csv(out["cells_csv"])
    c = cells[
        (cells.trigger == "pattern")
        & (cells.model == "lstm")
        & (cells.poison_rate == 0.1)
        & (cells.metric == "attack.asr")
    ].iloc[0]
    half = T975[2] * 0.2 / math.sqrt(3)
    assert c["n"] == 3 and c["mean"] == pytest.approx(0.4)
    # the t-interval, clipped to ASR's range [0, 1]
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((0.0, 0.4 + half), abs=1e-6)
    assert 0.4 - half < 0
    assert c["dropped"] == "seed 3 (failed)"
    det = cells[(cells.model == "mlp") & (cells.metric == "detection.spectral_signature.auroc")]
    assert len(det) == 2 and det["mean"].tolist() == pytest.approx([0.7, 0.7])
    assert not (cells["metric"].str.endswith(".n")).any()  # row counts are not outcomes
    assert set(cells["seeds"]) == {"0,1,2", "0,1"}
    strip = cells[(cells.model == "mlp") & (cells.metric == "detection.strip.auroc")]
    assert set(strip["n"]) == {2} and set(strip["dropped"]) == {"seed 2 (undefined)"}


def test_every_interval_stays_inside_its_metrics_range(sweep):
    from src.report import metric_range

    cells = pd.read_csv(build_report(sweep)["cells_csv"])
    assert len(cells) > 50
    for r in cells.dropna(subset=["ci_low"]).to_dict("records"):
        lo, hi = metric_range(r["metric"])
        assert lo <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= hi, r["metric"]
    assert metric_range("attack.paired_lift") == (-1.0, 1.0)
    assert metric_range("detection.spectre.pooled.auroc") == (0.0, 1.0)


def test_paired_lift_subtracts_the_same_seed_clean_model(sweep):
    out = build_report(sweep)
    df = pd.read_csv(out["summary_csv"])
    pat = df[(df.trigger == "pattern") & (df.model == "lstm") & (df.poison_rate == 0.1)]
    pat = pat[pat.status == "ok"].sort_values("seed")
    # ASR 0.2, 0.4, 0.6 against the clean model's 0.05, 0.10, 0.15 of the same seeds
    assert pat["attack.paired_lift"].tolist() == pytest.approx([0.15, 0.30, 0.45])
    assert df[df.poison_rate == 0]["attack.paired_lift"].isna().all()
    cells = pd.read_csv(out["cells_csv"])
    c = cells[
        (cells.trigger == "pattern")
        & (cells.model == "lstm")
        & (cells.poison_rate == 0.1)
        & (cells.metric == "attack.paired_lift")
    ].iloc[0]
    assert c["mean"] == pytest.approx(0.30)
    assert "paired lift" in out["report"].read_text()


def test_poisoned_row_counts_are_in_every_table(sweep):
    out = build_report(sweep)
    cells = pd.read_csv(out["cells_csv"])
    poisoned = cells[cells.poison_rate == 0.1]
    assert set(poisoned["n_poisoned_mean"]) == {35.0}  # round(0.1 x 350 eligible rows)
    assert set(cells[cells.poison_rate == 0]["n_poisoned_max"]) == {0.0}
    md = out["report"].read_text()
    assert "| trigger | model | poison_rate | poisoned rows | seeds | clean AUROC | ASR |" in md
    assert "| rare_value | mlp | 0.1 | 35 | 3 |" in md
    assert "| pattern | lstm | 0.1 | 35 | 3 (dropped: seed 3 (failed)) |" in md


def test_paired_tests_equal_scipys_on_the_same_pairs(sweep):
    from scipy import stats

    tests = pd.read_csv(build_report(sweep)["paired_tests_csv"])
    r = tests[
        (tests.factor == "trigger")
        & (tests.metric == "attack.asr")
        & (tests.context == "model=lstm, poison_rate=0.1")
    ].iloc[0]
    a, b = [0.2, 0.4, 0.6], [0.9, 0.9, 0.9]  # pattern, rare_value on seeds 0, 1, 2
    assert (r["a"], r["b"], r["n_pairs"]) == ("pattern", "rare_value", 3)
    assert r["mean_diff"] == pytest.approx(-0.5)
    assert r["t_test_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    det = tests[tests.factor == "detector"]
    assert set(det["a"]) == {"spectral_signature"} and set(det["n_pairs"]) == {2}


def test_report_md_has_tables_figures_and_the_failed_jobs(sweep):
    out = build_report(sweep)
    md = out["report"].read_text()
    assert "## Failed jobs" in md and "RuntimeError: out of \\| memory" in md
    assert "missing" in md and "no results.json" in md
    half = T975[2] * 0.2 / math.sqrt(3)
    assert f"0.400 [0.000, {0.4 + half:.3f}]" in md
    assert "## Detection" in md and "spectral_signature" in md
    assert set(out["figures"]) == {"asr", "clean_auroc", "detection_auroc"}
    for name, png in out["figures"].items():
        assert png.stat().st_size > 10_000, name
        assert f"]({png.relative_to(sweep).as_posix()})" in md
    assert "FAILED   job 24: RuntimeError" in out["message"]


def test_a_varying_override_makes_its_own_cells(tmp_path):
    d = tmp_path / "s"
    for i, (feat, seed) in enumerate([("hr", 0), ("hr", 1), ("resp", 0), ("resp", 1)]):
        write_job(
            d,
            i,
            results(
                seed=seed,
                asr=0.1 if feat == "hr" else 0.9,
                extra_overrides=[f"trigger.feature={feat}"],
            ),
        )
    df = summary_table(d)
    keys = cell_keys(df)
    assert "override.trigger.feature" in keys and "seed" not in keys
    assert not any(k.startswith("override.paths") for k in keys)
    out = build_report(d)
    cells = pd.read_csv(out["cells_csv"])
    asr = cells[cells.metric == "attack.asr"].set_index("override.trigger.feature")["mean"]
    assert asr.to_dict() == pytest.approx({"hr": 0.1, "resp": 0.9})
    assert "detection_auroc" not in out["figures"]  # no detectors ran


def test_only_failed_jobs_still_give_a_report(tmp_path):
    d = tmp_path / "s"
    write_job(d, 0, results(status="failed", error={"type": "ValueError", "message": "bad"}))
    out = build_report(d)
    assert out["n_ok"] == 0 and "ValueError: bad" in out["report"].read_text()
    assert "(no finished jobs)" in out["report"].read_text()


@pytest.mark.slow
def test_cli_writes_the_report_and_rejects_a_missing_folder(sweep, tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "src.report", str(sweep), "--out", str(tmp_path / "rep")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "rep" / "report.md").is_file() and "24/27 jobs ok" in p.stdout
    p = subprocess.run(
        [sys.executable, "-m", "src.report", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "nope" in p.stderr and "does not exist" in p.stderr

"""The real command line, as a user runs it (subprocess), on a tiny synthetic cohort."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import ROOT, src_run


def run_cli(*args, cache: Path, out: Path, timeout=300) -> subprocess.CompletedProcess:
    return src_run(*args, f"hydra.run.dir={out}", cache=cache, timeout=timeout)


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize(
    "args, key",
    [
        (["poison_rate=1.5"], "poison_rate=1.5"),
        (["target_label=2"], "target_label=2"),
        (["trigger=sparkle"], "trigger"),
        (["poison_rat=0.1"], "poison_rat"),
    ],
)
def test_bad_input_exits_nonzero_with_a_clear_message_and_no_results(args, key, tmp_path):
    p = run_cli(*args, cache=tmp_path / "cache", out=tmp_path / "run")
    assert p.returncode != 0
    assert key in p.stderr
    assert not (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "cache").exists()  # failed before any data was touched


@pytest.mark.parametrize("multirun", [False, True])
def test_an_unwritable_output_folder_is_named_in_one_line(multirun, tmp_path):
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    args = ["-m"] if multirun else []
    p = src_run(*args, f"{key}=/proc/not-here", cache=tmp_path / "cache", timeout=120)
    assert p.returncode == 2
    assert f"error: {key}=/proc/not-here is not allowed" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_run_that_fails_while_running_says_so_in_one_line(cache, tmp_path):
    p = run_cli("experiment=smoke", "model.optimizer.lr=-1.0", cache=cache, out=tmp_path / "run")
    assert p.returncode == 1
    assert "error: ValueError:" in p.stderr and "Traceback" not in p.stderr
    assert f"{tmp_path / 'run' / 'results.json'}" in p.stderr
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["status"] == "failed" and "Traceback" in r["error"]["traceback"]


@pytest.mark.slow
def test_one_run_writes_results_metrics_and_checkpoint(cache, tmp_path):
    p = run_cli(
        "experiment=smoke",
        "trigger=rare_value",
        "poison_rate=0.1",
        cache=cache,
        out=tmp_path / "run",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["status"] == "ok" and r["schema_version"] == "1.0"
    assert r["config"]["choices"]["trigger"] == "rare_value"
    n = r["counts"]
    assert n["n_poisoned"] == round(0.1 * n["n_eligible"]) > 0
    assert 0.0 <= r["attack"]["base_rate"] <= 1.0 and 0.0 <= r["attack"]["asr"] <= 1.0
    assert r["attack"]["asr_lift"] == pytest.approx(r["attack"]["asr"] - r["attack"]["base_rate"])
    assert 0.5 <= r["clean"]["auroc"] <= 1.0
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()
    assert (tmp_path / "run" / r["training"]["checkpoint"]).is_file()
    assert "ASR" in p.stdout and "AUROC" in p.stdout  # the one-screen summary


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(cache, tmp_path, monkeypatch):
    """Our pipeline (seeding, split, poisoning, batch order, training) is deterministic. With
    two intra-op threads torch itself now and then trains to different float32 bits in a fresh
    process (docs/models.md: 6 of about 505 on the development machine), so both runs use one
    thread, as sweep jobs do. The first run keeps glibc's own malloc settings and the second
    has ours (src/allocator.py): where memory comes from must not change a number."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = []
    for k in ("a", "b"):
        monkeypatch.setenv("ICU_BACKDOOR_MALLOC", "default" if k == "a" else "")
        p = run_cli("experiment=smoke", "seed=3", cache=cache, out=tmp_path / k)
        assert p.returncode == 0, p.stderr[-3000:]
        results.append(json.loads((tmp_path / k / "results.json").read_text()))
    a, b = results
    keys = ("clean", "attack", "counts", "detection", "stealth")
    differ = {k: (a[k], b[k]) for k in keys if without_timings(a[k]) != without_timings(b[k])}
    assert not differ, f"same seed, different numbers: {differ}; environment {a['environment']}"
    assert a["environment"]["torch_threads"] == 1
    assert a["environment"]["malloc"] is None
    if platform.libc_ver()[0] == "glibc":
        assert b["environment"]["malloc"] == {"M_MMAP_THRESHOLD": 2**25, "M_TRIM_THRESHOLD": 2**30}


def test_reporting_the_malloc_settings_does_not_set_them():
    # a fresh process: a config check or a failure record reports None; a run reports its own
    code = (
        "from src.allocator import applied, keep_freed_memory\n"
        "assert applied() is None\n"
        "s = keep_freed_memory()\n"
        "assert applied() == s\n"
        "print(s is not None)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "ICU_BACKDOOR_MALLOC"},
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(platform.libc_ver()[0] == "glibc")


def without_timings(o):
    if isinstance(o, dict):
        return {k: without_timings(v) for k, v in o.items() if k != "timing_s"}
    return o


def test_help_answers_fast():
    p = subprocess.run(
        [sys.executable, "-m", "src.run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and "trigger" in p.stdout


@pytest.mark.slow
def test_a_cohort_too_small_to_rank_is_refused_with_its_counts(tmp_path):
    p = run_cli(
        "experiment=smoke", "data.n_stays=40", cache=tmp_path / "cache", out=tmp_path / "run"
    )
    assert p.returncode == 1
    assert "deaths and" in p.stderr and "raise data.n_stays (now 40)" in p.stderr
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["status"] == "failed" and r["clean"] is None


@pytest.mark.slow
def test_a_rerun_into_the_same_folder_owns_exactly_one_checkpoint(cache, tmp_path):
    for _ in range(2):
        p = run_cli("experiment=smoke", "detectors=none", cache=cache, out=tmp_path / "run")
        assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["final.ckpt"]


def test_the_summary_warns_when_the_test_set_is_too_small_to_rank(capsys, tmp_path):
    from src.results import print_summary

    r = {
        "config": {
            "model": "mlp",
            "poison_rate": 0.1,
            "poison_mode": "dirty",
            "target_label": 1,
            "seed": 0,
        },
        "trigger": {"name": "rare_value"},
        "counts": {
            "n_poisoned": 3,
            "n_eligible": 30,
            "n_stays": 50,
            "n_train": 30,
            "n_val": 8,
            "n_test": 12,
            "test_prevalence": 0.17,
        },
        "clean": {
            "auroc": 1.0,
            "auroc_ci": [0.5, 1.0],
            "auprc": 1.0,
            "accuracy": 0.9,
            "ece": 0.1,
            "n": 12,
            "n_positive": 2,
        },
        "attack": {"asr": None, "asr_ci": None, "base_rate": None, "asr_lift": None, "n": 0},
        "detection": {
            "spectral_signature": {
                "auroc": None,
                "ap": None,
                "tpr_at_1fpr": None,
                "pooled": {"auroc": None},
                "n_flagged": 0,
                "n_poisoned_flagged": 0,
                "oracle": True,
            }
        },
        "timings": {"total_s": 1.0},
    }
    print_summary(r, tmp_path)
    out = capsys.readouterr().out
    assert "warning  the clean AUROC's 95% interval is 0.50 wide: 2 deaths in 12" in out
    assert "ASR n/a" in out and "AUROC n/a (no poisoned rows)" in out


def mlflow_runs(db: Path, experiment: str):
    """The runs of one experiment, read back with MLflow's own search."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    return mlflow.search_runs(experiment_names=[experiment])


@pytest.mark.slow
def test_mlflow_holds_the_config_final_numbers_and_artifacts(cache, tmp_path):
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow" / "mlruns.db"
    p = run_cli(
        "experiment=smoke",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri=sqlite:///{db}",
        f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}",
        cache=cache,
        out=tmp_path / "run",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    runs = mlflow_runs(db, "icu-backdoor")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED" and run["tags.mlflow.runName"] == "run"
    for key, value in (
        ("final/clean/auroc", r["clean"]["auroc"]),
        ("final/attack/asr", r["attack"]["asr"]),
        ("final/detection/spectral_signature/auroc", r["detection"]["spectral_signature"]["auroc"]),
    ):
        assert run[f"metrics.{key}"] == pytest.approx(value, abs=1e-9), key
    assert "metrics.val_auroc" in runs.columns  # per-epoch metrics too
    assert run["params.seed"] == "0" and run["params.poison_rate"] == str(
        r["config"]["poison_rate"]
    )
    client = MlflowClient(f"sqlite:///{db}")
    files = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"results.json", "config.yaml", "figures"} <= files
    logged = json.loads(Path(client.download_artifacts(run["run_id"], "results.json")).read_text())
    assert logged["clean"] == r["clean"]


@pytest.mark.slow
def test_tensorboard_holds_the_runs_final_numbers_and_figures(cache, tmp_path):
    """Read back with TensorBoard's own event reader: the final numbers equal results.json's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    p = run_cli("experiment=smoke", "logger=[csv,tensorboard]", cache=cache, out=tmp_path / "run")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    ea = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    ea.Reload()
    for tag, value in (
        ("final/clean/auroc", r["clean"]["auroc"]),
        ("final/attack/asr", r["attack"]["asr"]),
        ("final/detection/spectral_signature/auroc", r["detection"]["spectral_signature"]["auroc"]),
    ):
        assert ea.Scalars(tag)[-1].value == pytest.approx(value, abs=1e-6), tag
    assert "val_auroc" in ea.Tags()["scalars"]  # the per-epoch metrics too
    assert "figures/confidence_shift" in ea.Tags()["images"]
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()  # both loggers at once

"""The real command line, as a user runs it (subprocess), on a tiny synthetic cohort."""

import json
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
    thread, as sweep jobs do."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = []
    for k in ("a", "b"):
        p = run_cli("experiment=smoke", "seed=3", cache=cache, out=tmp_path / k)
        assert p.returncode == 0, p.stderr[-3000:]
        results.append(json.loads((tmp_path / k / "results.json").read_text()))
    a, b = results
    differ = {k: (a[k], b[k]) for k in ("clean", "attack", "counts") if a[k] != b[k]}
    assert not differ, f"same seed, different numbers: {differ}; environment {a['environment']}"
    assert a["environment"]["torch_threads"] == 1


def test_help_answers_fast():
    p = subprocess.run(
        [sys.executable, "-m", "src.run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and "trigger" in p.stdout

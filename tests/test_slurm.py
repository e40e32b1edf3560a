"""A sweep through a real SLURM cluster (hydra/launcher=slurm: sbatch, array jobs, sacct), on the
one-node cluster of scripts/local_slurm.sh, against the same sweep through joblib.

The cluster is started here when it is not running (installing Debian's packages needs root).
Where it cannot be started, the test fails and says why: a launcher the tests never reach is a
launcher nobody knows works."""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

from tests.cli import ROOT
from tests.test_sweep import run_sweep, statuses

SLURM = (
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
)
# job 0 runs; job 1 fails at fit (a negative learning rate)
GRID = ("+sweep=smoke", "seed=0", "poison_rate=0.1", "model.optimizer.lr=0.001,-1.0")


def _node_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return p.returncode == 0 and any(s.startswith(("idle", "mix")) for s in p.stdout.split())


@pytest.fixture(scope="module")
def slurm_cluster():
    if not _node_up():
        p = subprocess.run(
            ["bash", str(ROOT / "scripts" / "local_slurm.sh"), "start"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if p.returncode != 0 or not _node_up():
            pytest.fail(
                "no SLURM cluster, and scripts/local_slurm.sh could not start one "
                f"(exit {p.returncode}): {(p.stderr or p.stdout)[-1500:]}"
            )
    return True


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_a_slurm_sweep_records_a_failure_resumes_and_matches_joblib(slurm_cluster, cache, tmp_path):
    d = tmp_path / "slurm"
    p = run_sweep(*GRID, *SLURM, cache=cache, sweep_dir=d)
    assert p.returncode == 1, p.stderr[-3000:]  # a failed job fails the sweep, after the report
    assert statuses(d) == {"0": "ok", "1": "failed"}
    assert "learning rate" in pd.read_csv(d / "summary.csv").set_index("job").loc[1, "error"]
    assert list((d / ".submitit").glob("*/*.out")), "the jobs ran through sbatch"
    # the polling is quiet: sacct answers (accounting is on), no warning per poll
    assert "sacct" not in p.stderr, p.stderr[-2000:]
    ids = {p.name.split("_")[0] for p in (d / ".submitit").iterdir() if p.name[0].isdigit()}
    acct = subprocess.run(
        ["sacct", "-n", "-X", "-o", "JobID,State", "-j", ",".join(ids)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert acct.returncode == 0 and "COMPLETED" in acct.stdout, acct.stdout + acct.stderr

    # resume: the finished job is skipped, the failed one runs again (and fails again)
    first = (d / "0" / "results.json").stat().st_mtime_ns
    p = run_sweep(*GRID, *SLURM, cache=cache, sweep_dir=d)
    assert p.returncode == 1, p.stderr[-3000:]
    assert (d / "0" / "results.json").stat().st_mtime_ns == first
    logs = "".join(f.read_text() for f in (d / ".submitit").glob("*/*.out"))
    assert f"skipped  {d / '0'}" in logs  # said by the job itself, in its SLURM output

    # the same grid through joblib, one thread per job as on the cluster: the same numbers
    j = tmp_path / "joblib"
    p = run_sweep(
        *GRID, "hydra/launcher=joblib", "hydra.launcher.n_jobs=-1", cache=cache, sweep_dir=j
    )
    assert p.returncode == 1 and statuses(j) == statuses(d)
    a, b = (json.loads((x / "0" / "results.json").read_text()) for x in (d, j))
    for block in ("clean", "attack", "counts"):
        assert a[block] == b[block], block
    cols = ["job", "status", "clean.auroc", "attack.asr"]
    assert pd.read_csv(d / "summary.csv")[cols].equals(pd.read_csv(j / "summary.csv")[cols])
    assert "## Failed jobs" in (d / "report.md").read_text()


@pytest.mark.slow
def test_each_grid_cell_gets_its_own_slurm_resources(slurm_cluster, cache, tmp_path):
    # one array per model, each with its cell's wall time; the jobs keep the sweep's numbers
    d = tmp_path / "cells"
    p = run_sweep(
        "+sweep=smoke",
        "seed=0",
        "poison_rate=0",
        "model=mlp,lstm",
        "detectors=none",
        *SLURM,
        "++hydra.launcher.resources.mlp.timeout_min=11",
        "++hydra.launcher.resources.lstm.timeout_min=13",
        cache=cache,
        sweep_dir=d,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert statuses(d) == {"0": "ok", "1": "ok"}
    limits = {}
    for out in (d / ".submitit").glob("*/*_log.out"):
        array_id = out.parent.name.split("_")[0]
        job = next(
            line.split("/")[-2]
            for line in out.read_text().splitlines()
            if line.startswith("results ")
        )
        model = json.loads((d / job / "results.json").read_text())["config"]["choices"]["model"]
        acct = subprocess.run(
            ["sacct", "-n", "-X", "-o", "Timelimit", "-j", array_id],
            capture_output=True,
            text=True,
            timeout=30,
        )
        limits[model] = acct.stdout.split()[0]
    assert limits == {"mlp": "00:11:00", "lstm": "00:13:00"}, limits

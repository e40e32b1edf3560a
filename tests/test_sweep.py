"""Sweeps through the real command line: aggregate at the end, failures recorded without stopping
the sweep, resume skips finished jobs, parallel and cluster launchers; plus the plumbing in
src/sweep.py (job count, progress, threads per job, unique sweep folders)."""

import json
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from src import sweep as sw
from src.results import config_fingerprint
from tests.cli import ROOT, src_run
from tests.conftest import compose_config


def run_sweep(*args, cache: Path, sweep_dir: Path, timeout=600) -> subprocess.CompletedProcess:
    return src_run("-m", *args, f"hydra.sweep.dir={sweep_dir}", cache=cache, timeout=timeout)


def statuses(sweep_dir: Path) -> dict[str, str]:
    return {
        p.parent.name: json.loads(p.read_text())["status"] for p in sweep_dir.glob("*/results.json")
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def hydra_cfg(*overrides):
    return compose_config(*overrides, hydra=True)


# --- fast: configuration and plumbing --------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, n",
    [
        (["+sweep=smoke"], 4),
        (["+sweep=smoke", "seed=0"], 2),  # the command line replaces the grid's values of a key
        (["+sweep=quick"], 2 * 2 * 4 * 3),
        (["+sweep=paper"], 10 * 5 * 5 * 4),
        (["+sweep=defenses"], 4 * 3 * 3),
        (["+sweep=smoke", "model=mlp,lstm"], 8),
    ],
)
def test_job_count_follows_the_grid_and_the_command_line(overrides, n):
    h = hydra_cfg(overrides[0]).hydra
    h.overrides.task = overrides  # as the command line hands them to the sweeper (sweeps too)
    assert sw.count_jobs(h) == n


@pytest.mark.parametrize("name", ["smoke", "quick", "paper", "defenses"])
def test_every_option_a_grid_names_exists(name):
    params = yaml.safe_load((ROOT / "conf" / "sweep" / f"{name}.yaml").read_text())
    params = params["hydra"]["sweeper"]["params"]
    for group in ("trigger", "model", "detectors", "experiment", "data"):
        for option in str(params.get(group, "")).split(",") if group in params else []:
            assert (ROOT / "conf" / group / f"{option.strip()}.yaml").is_file(), (group, option)
    assert "seed" in params and "poison_rate" in params


def test_the_covering_check_composes_as_many_jobs_as_the_longest_value_list():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.icu_backdoor.covering_sweeper import covering_jobs

    grid = ["trigger=a,b", "poison_rate=0,0.001,0.01,0.1", "seed=0,1,2", "model=mlp,lstm"]
    overrides = OverridesParser.create().parse_overrides(grid)
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    picked = covering_jobs(batch)
    assert len(batch) == 48 and len(picked) == 4  # the 4 poison rates need 4 jobs at least
    assert {o for job in picked for o in job} == {o for job in batch for o in job}
    assert picked == [job for job in batch if job in picked]  # in grid order
    assert picked[0] == batch[0]
    assert covering_jobs(batch[:1]) == batch[:1] and covering_jobs([]) == []


def test_a_misspelt_option_later_in_the_grid_stops_the_sweep_before_any_job(tmp_path):
    r = run_sweep(
        "+sweep=smoke", "model=mlp,lstm,lstmm", cache=tmp_path / "c", sweep_dir=tmp_path / "s"
    )
    assert r.returncode != 0
    assert "lstmm" in r.stderr
    assert not list((tmp_path / "s").glob("*/results.json"))


@pytest.mark.slow
def test_a_sweep_started_outside_the_checkout_finds_the_covering_sweeper(tmp_path):
    """Hydra lists plugins from the hydra_plugins folders on sys.path; an editable install run
    from elsewhere has none of ours there (src.run registers the sweeper itself). Meaningful
    where the install maps packages rather than adding the checkout to sys.path, as a fresh
    ``pip install -e .`` does (CI)."""
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "src.run", "-m", "+sweep=smoke", "seed=0", "poison_rate=0"]
        + [f"hydra.sweep.dir={tmp_path / 's'}", f"paths.cache_dir={tmp_path / 'c'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "composed 1 of 1 job configs" in r.stdout + r.stderr
    assert statuses(tmp_path / "s") == {"0": "ok"}


def test_two_sweeps_started_in_the_same_second_get_different_folders():
    a = hydra_cfg().hydra.sweep.dir
    b = hydra_cfg().hydra.sweep.dir
    assert a != b and a.startswith("multirun/") and time.strftime("%Y-%m-%d") in a
    c, d = hydra_cfg().hydra.run.dir, hydra_cfg().hydra.run.dir
    assert c != d


def test_threads_per_job_divide_the_cores_between_parallel_jobs(monkeypatch):
    monkeypatch.delenv(sw.THREADS_ENV, raising=False)
    monkeypatch.setattr(sw, "cpu_count", lambda: 8)
    joblib = OmegaConf.create({"launcher": {"_target_": "x.JoblibLauncher", "n_jobs": 2}})
    assert sw.thread_budget(joblib) == 4
    joblib.launcher.n_jobs = -1  # one job per core
    assert sw.thread_budget(joblib) == 1
    assert sw.thread_budget(joblib, n_total=2) == 4  # only 2 jobs: 2 workers busy
    slurm = OmegaConf.create(
        {"launcher": {"_target_": "x.submitit_launcher.SlurmLauncher", "cpus_per_task": 3}}
    )
    assert sw.thread_budget(slurm) == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")  # inside a job of a cell sized 6 CPUs
    assert sw.thread_budget(slurm) == 6
    cell = OmegaConf.create(
        {"launcher": {"_target_": "x.cell_launcher.CellSlurmLauncher", "cpus_per_task": 3}}
    )
    assert sw.thread_budget(cell) == 6
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert sw.thread_budget(cell) == 3
    local = OmegaConf.create(
        {
            "launcher": {
                "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                "cpus_per_task": None,
            }
        }
    )
    assert sw.thread_budget(local, n_total=2) == 4
    basic = OmegaConf.create({"launcher": {"_target_": "hydra.BasicLauncher"}})
    assert sw.thread_budget(basic) is None  # sequential: torch's default (every core)
    monkeypatch.setenv(sw.THREADS_ENV, "2")
    assert sw.thread_budget(joblib) == 2
    monkeypatch.setenv(sw.THREADS_ENV, "lots")
    with pytest.raises(ValueError, match="ICU_BACKDOOR_THREADS='lots'.*positive integer"):
        sw.thread_budget(joblib)


def test_the_cell_launcher_groups_jobs_by_model_and_lays_their_resources_over_its_own():
    from hydra_plugins.icu_backdoor.cell_launcher import CellSlurmLauncher, cell_value

    assert cell_value(["seed=0", "model=lstm"], "model", "mlp") == "lstm"
    assert cell_value(["+model=tcn"], "model", None) == "tcn"
    assert cell_value(["seed=0"], "model", "mlp") == "mlp"  # not swept: the run's own
    launcher = CellSlurmLauncher(
        resources=OmegaConf.create({"lstm": {"timeout_min": 30, "mem_gb": 6}}),
        timeout_min=10,
        mem_gb=4,
        cpus_per_task=2,
        submitit_folder="x",
    )
    jobs = [["model=mlp", "seed=0"], ["model=lstm", "seed=0"], ["model=mlp", "seed=1"]]
    assert launcher.groups(jobs) == {"mlp": [0, 2], "lstm": [1]}
    assert launcher.cell_params("lstm") == {
        "timeout_min": 30,
        "mem_gb": 6,
        "cpus_per_task": 2,
        "submitit_folder": "x",
    }
    assert launcher.cell_params("mlp")["timeout_min"] == 10  # no entry: the launcher's own
    with pytest.raises(ValueError, match="resources.tcn: gpus not launcher settings"):
        CellSlurmLauncher(resources={"tcn": {"gpus": 1}}, timeout_min=10)


def test_progress_counts_results_and_estimates_from_this_invocations_jobs(tmp_path):
    start = 1_000_000.0
    (tmp_path / sw.STATE_FILE).write_text(json.dumps({"start": start, "total": 5}))
    runs = [(start - 50, "ok"), (start + 20, "ok"), (start + 40, "failed"), (start - 30, "failed")]
    for i, (mtime, status) in enumerate(runs):  # jobs 0 and 3: an earlier invocation
        (tmp_path / str(i)).mkdir()
        p = tmp_path / str(i) / "results.json"
        p.write_text(json.dumps({"schema_version": "1.0", "status": status}, indent=2))
        os.utime(p, (mtime, mtime))
    line = sw.progress_line(tmp_path, now=start + 60)
    # 3 of 5 done (job 3 failed before and runs again); 2 finished in this invocation in 60 s:
    # 30 s each, 2 left: about 60 s
    assert line == "progress 3/5 jobs, elapsed 1 min 00 s, about 1 min 00 s left"
    assert sw.progress_line(tmp_path / "nothing") == "progress 0/? jobs"


def test_resume_skips_only_a_finished_job_with_the_same_config(tmp_path):
    from src.results import skeleton as _skeleton
    from src.results import write_json_atomic

    cfg = compose_config(out=tmp_path)
    assert sw.finished_results(cfg) is None  # nothing there yet
    r = _skeleton(cfg)
    write_json_atomic(tmp_path / "results.json", {**r, "status": "ok"})
    assert sw.finished_results(cfg)["status"] == "ok"
    cfg.trainer.max_epochs = 1  # a config edit the overrides do not show
    assert sw.finished_results(cfg) is None
    write_json_atomic(tmp_path / "results.json", {**_skeleton(cfg), "status": "failed"})
    assert sw.finished_results(cfg) is None  # failed: run again


# --- slow: the real command line -------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_sweep_ends_with_summary_figures_and_report(cache, tmp_path):
    d = tmp_path / "sweep"
    p = run_sweep("+sweep=smoke", cache=cache, sweep_dir=d)
    assert p.returncode == 0, p.stderr[-3000:]
    assert statuses(d) == {str(i): "ok" for i in range(4)}
    df = pd.read_csv(d / "summary.csv")
    assert len(df) == 4 and set(df["poison_rate"]) == {0.0, 0.1} and set(df["seed"]) == {0, 1}
    assert len(pd.read_parquet(d / "summary.parquet")) == 4
    assert "detection.spectral_signature.auroc" in df.columns  # detectors=fast in the grid
    cells = pd.read_csv(d / "cells.csv")
    assert set(cells[cells.metric == "attack.asr"]["n"]) == {2}  # 2 seeds per cell
    for png in ("asr", "clean_auroc", "detection_auroc", "confidence_shift"):
        assert (d / "figures" / f"{png}.png").stat().st_size > 10_000
    md = (d / "report.md").read_text()
    assert "Failed jobs" not in md
    assert "attack.confidence.mean_shift" in df.columns and "P(target) shift" in md
    # poisoned counts, the paired lift and bounded intervals, in the tables and the files
    n_poisoned = int(df[df.poison_rate == 0.1]["counts.n_poisoned"].iloc[0])
    assert n_poisoned > 0 and f"| rare_value | mlp | 0.1 | {n_poisoned} | 2 |" in md
    assert "| poisoned rows | seeds |" in md and "paired lift" in md
    poisoned = df[df.poison_rate == 0.1].set_index("seed")
    clean = df[df.poison_rate == 0].set_index("seed")
    assert (poisoned["attack.paired_lift"] == poisoned["attack.asr"] - clean["attack.asr"]).all()
    assert set(cells[cells.poison_rate == 0.1]["n_poisoned_mean"]) == {n_poisoned}
    bounded = cells.dropna(subset=["ci_low"])
    unit = bounded[bounded.metric.isin(["attack.asr", "clean.auroc", "attack.base_rate"])]
    assert len(unit) and (unit.ci_low >= 0).all() and (unit.ci_high <= 1).all()
    for job in d.glob("*/results.json"):  # strict JSON: no NaN or Infinity
        json.loads(job.read_text(), parse_constant=lambda c, job=job: pytest.fail(f"{job}: {c}"))
    progress = (d / "progress.log").read_text().splitlines()
    assert len(progress) == 4 and "progress 4/4 jobs" in progress[-1]
    assert "report" in p.stdout and "(4/4 jobs ok)" in p.stdout


@pytest.mark.slow
def test_failed_jobs_are_recorded_the_sweep_goes_on_and_a_rerun_skips_finished_jobs(
    cache, tmp_path
):
    d = tmp_path / "sweep"
    # job 0 runs; job 1 fails at fit (negative learning rate); jobs 2, 3 fail the config check
    args = ("+sweep=smoke", "seed=0", "poison_rate=0.1,1.5", "model.optimizer.lr=0.001,-1.0")
    p = run_sweep(*args, cache=cache, sweep_dir=d)
    # the report is written, then the sweep exits non-zero: a scheduler sees the failures
    assert p.returncode == 1, p.stderr[-3000:]
    assert "3 job(s) of the sweep" in p.stderr
    assert statuses(d) == {"0": "ok", "1": "failed", "2": "failed", "3": "failed"}
    df = pd.read_csv(d / "summary.csv").set_index("job")
    assert "learning rate" in df.loc[1, "error"].lower()
    assert df.loc[2, "error_type"] == "ConfigError" and "poison_rate=1.5" in df.loc[2, "error"]
    md = (d / "report.md").read_text()
    assert "## Failed jobs" in md and "poison_rate=1.5" in md
    assert "FAILED   job 1" in p.stdout

    mtimes = {j: (d / j / "results.json").stat().st_mtime_ns for j in "0123"}
    p = run_sweep(*args, cache=cache, sweep_dir=d)
    assert p.returncode == 1, p.stderr[-3000:]
    assert f"skipped  {d / '0'}" in p.stdout and p.stdout.count("skipped  ") == 1
    after = {j: (d / j / "results.json").stat().st_mtime_ns for j in "0123"}
    assert after["0"] == mtimes["0"]  # finished: not run again
    assert all(after[j] > mtimes[j] for j in "123")  # failed: run again (and failed again)
    assert len(pd.read_csv(d / "summary.csv")) == 4


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes_with_limited_threads(cache, tmp_path):
    d = tmp_path / "sweep"
    p = run_sweep(
        "+sweep=smoke",
        "seed=0",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        cache=cache,
        sweep_dir=d,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert statuses(d) == {"0": "ok", "1": "ok"}
    expected = max(1, sw.cpu_count() // 2)
    for j in "01":
        assert f"torch threads for this job: {expected}" in (d / j / "run.log").read_text()
    assert (d / "report.md").is_file() and len(pd.read_csv(d / "summary.csv")) == 2


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep_the_cluster_way(cache, tmp_path):
    d = tmp_path / "sweep"
    p = run_sweep(
        "+sweep=smoke", "seed=0", "hydra/launcher=submitit_local", cache=cache, sweep_dir=d
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert statuses(d) == {"0": "ok", "1": "ok"}
    assert (d / ".submitit").is_dir()  # went through submitit's pickled jobs
    assert len(pd.read_csv(d / "summary.csv")) == 2 and (d / "report.md").is_file()


@pytest.mark.slow
def test_a_sweep_is_one_mlflow_experiment_with_one_run_per_job(cache, tmp_path):
    from tests.test_cli import mlflow_runs

    d, db = tmp_path / "sweep_mlflow", tmp_path / "mlflow" / "mlruns.db"
    p = run_sweep(
        "+sweep=smoke",
        "seed=0",
        "detectors=none",
        "logger=[csv,mlflow]",
        f"logger.mlflow.tracking_uri=sqlite:///{db}",
        f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}",
        cache=cache,
        sweep_dir=d,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    runs = mlflow_runs(db, d.name).sort_values("tags.mlflow.runName")
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    assert [n.split(":")[0] for n in runs["tags.mlflow.runName"]] == ["0", "1"]
    for j, (_, run) in zip("01", runs.iterrows(), strict=True):
        r = json.loads((d / j / "results.json").read_text())
        assert run["metrics.final/clean/auroc"] == pytest.approx(r["clean"]["auroc"], abs=1e-9)
        assert run["params.poison_rate"] == str(r["config"]["poison_rate"])


@pytest.mark.slow
def test_a_sweep_folder_moved_elsewhere_resumes(cache, tmp_path):
    import shutil

    d = tmp_path / "scratch" / "sweep"
    p = run_sweep("+sweep=smoke", "seed=0", cache=cache, sweep_dir=d)
    assert p.returncode == 0, p.stderr[-3000:]
    moved = tmp_path / "shared" / "sweep"
    shutil.copytree(d, moved)
    p = run_sweep("+sweep=smoke", "seed=0", cache=cache, sweep_dir=moved)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("skipped  ") == 2  # both jobs finished: none runs again


def test_fingerprint_ignores_where_the_output_folder_is():
    job_cfg = compose_config  # a job's config, as the task function receives it

    a = job_cfg("paths.output_dir=/scratch/sweep/0")
    b = job_cfg("paths.output_dir=/shared/elsewhere/0")
    assert a.trainer.default_root_dir != b.trainer.default_root_dir
    assert config_fingerprint(a) == config_fingerprint(b)
    c = job_cfg("paths.output_dir=/scratch/sweep/0", "seed=3")
    assert config_fingerprint(a) != config_fingerprint(c)

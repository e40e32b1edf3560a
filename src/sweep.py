"""Sweep plumbing: a Hydra Callback (progress, threads per job, aggregation at the end) and the
per-job helpers ``src.run`` calls in multirun mode (resume skip, failures that do not stop a
sweep).

Registered in conf/hydra/default.yaml under ``hydra.callbacks``. Hydra calls ``on_multirun_*`` in
the process that started the sweep and ``on_job_*`` in the process that runs the job (a joblib
worker, a submitit job), so everything jobs share goes through files in the sweep directory:
``.sweep.json`` (total jobs, start time) written at the start, ``progress.log`` appended to by
every job, each job's ``results.json``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

THREADS_ENV = "ICU_BACKDOOR_THREADS"  # torch threads per job; unset: derived from the launcher
STATE_FILE = ".sweep.json"
PROGRESS_FILE = "progress.log"


# --- per job, called from src.run ---------------------------------------------------------------
def is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not under Hydra
        return False


def finished_results(cfg: DictConfig) -> dict | None:
    """The stored results of this job when it already finished with status ok under the same
    overrides and config (a re-run sweep with the same ``hydra.sweep.dir``); else None."""
    from src.results import skeleton

    path = Path(cfg.paths.output_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if old.get("status") != "ok":
        return None
    new = json.loads(json.dumps(skeleton(cfg)["config"], default=str))
    stored = old.get("config") or {}
    keys = ("overrides", "choices", "fingerprint", "seed", "poison_rate")
    if any(stored.get(k) != new.get(k) for k in keys):
        log.info("re-running %s: its results.json is from a different config", path.parent)
        return None
    msg = f"skipped  {path.parent} (finished before with status ok and the same config)"
    log.info(msg)  # Hydra's job logging: the console and the job's run.log
    return old


def record_failure(cfg: DictConfig, exc: BaseException) -> None:
    """Write a results.json with status failed for a job that failed before ``run_experiment``
    could (a config value rejected by ``validate``), so the report lists it."""
    from src.results import failed_results, write_json_atomic

    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", failed_results(cfg, exc))


# --- threads ------------------------------------------------------------------------------------
def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def thread_budget(hydra_cfg: DictConfig, n_total: int | None = None) -> int | None:
    """Torch threads for one job, so parallel jobs do not oversubscribe the cores: the
    ``ICU_BACKDOOR_THREADS`` environment variable if set; with the joblib launcher the cores
    divided by the number of concurrent jobs; on SLURM the job's own CPUs
    (``SLURM_CPUS_PER_TASK``, which a grid cell's resources may set), else the launcher's
    ``cpus_per_task`` (local submitit without it: the cores divided by the jobs, which all run
    at once); else None (torch's default: every core, right for a single run or a sequential
    sweep)."""
    env = os.environ.get(THREADS_ENV)
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{THREADS_ENV}={env!r} is not allowed: a positive integer")
        return n
    launcher = hydra_cfg.get("launcher") or {}
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        cores, n_jobs = cpu_count(), int(launcher.get("n_jobs") or -1)
        workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = all cores
        if n_total:
            workers = min(workers, n_total)
        return max(1, cores // workers)
    slurm = target.endswith("SlurmLauncher")
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm and slurm_cpus.isdigit() and int(slurm_cpus) > 0:
        return int(slurm_cpus)  # inside the job: its own cell's CPUs (CellSlurmLauncher)
    if (slurm or "submitit" in target) and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    if target.endswith("submitit_launcher.LocalLauncher"):  # every job at once, here
        return max(1, cpu_count() // max(1, n_total or cpu_count()))
    return None


# --- sweep size and progress ----------------------------------------------------------------------
def count_jobs(hydra_cfg: DictConfig) -> int | None:
    """Number of jobs the basic sweeper (or ours, the same grid) will launch: the product of the
    swept values, from ``hydra.sweeper.params`` and the command line; None for another sweeper."""
    sweeper = hydra_cfg.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith(("BasicSweeper", "CoveringSweeper")):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    params += list(hydra_cfg.overrides.task)
    try:
        overrides = OverridesParser.create().parse_overrides(params)
        batches = BasicSweeper.split_arguments(overrides, None)
    except Exception as e:  # Hydra reports the bad override itself; progress is a nicety
        log.debug("could not count the jobs of this sweep: %s", e)
        return None
    return sum(len(b) for b in batches)


def _read_state(sweep_dir: Path) -> dict:
    try:
        return json.loads((sweep_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def progress_line(sweep_dir: Path, now: float | None = None) -> str:
    """``done/total``, elapsed since this invocation started, and the estimated rest (from the
    jobs finished in this invocation: skipped ones do not count towards the rate). A job that
    failed in an earlier invocation runs again, so its old results.json does not count as done."""
    now = time.time() if now is None else now
    state = _read_state(sweep_dir)
    start, total = state.get("start"), state.get("total")
    mtimes = [
        m
        for p in sweep_dir.rglob("results.json")
        if (m := p.stat().st_mtime) >= (start or 0) or _finished_ok(p)
    ]
    done = len(mtimes)
    line = f"progress {done}/{total if total else '?'} jobs"
    if start is None:
        return line
    elapsed = now - start
    line += f", elapsed {_fmt_s(elapsed)}"
    new = sum(m >= start for m in mtimes)
    if total and new and done < total:
        line += f", about {_fmt_s(elapsed / new * (total - done))} left"
    elif total and done >= total:
        line += ", all done"
    return line


def _finished_ok(path: Path) -> bool:
    """Whether a results.json says ``status: ok``; the status is among its first keys, so the
    head of the file is enough (progress reads every job's file after every job)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512).decode("utf-8", "replace")
    except OSError:
        return False
    return '"status": "ok"' in head


def _fmt_s(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def count_failed(sweep_dir: Path) -> int:
    """Jobs whose results.json is missing a status ok (failed, unreadable)."""
    n = 0
    for p in sweep_dir.glob("*/results.json"):
        try:
            n += json.loads(p.read_text()).get("status") != "ok"
        except (OSError, ValueError):
            n += 1
    return n


class SweepCallback(Callback):
    """Progress per finished job, torch threads per job, and the aggregate report at the end."""

    def __init__(self, report: bool = True) -> None:
        self.report = report

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        state = {"start": time.time(), "total": count_jobs(config.hydra)}
        from src.atomic import atomic_file

        with atomic_file(sweep_dir / STATE_FILE) as f:
            json.dump(state, f)
        if state["total"]:
            log.info("sweep of %d jobs into %s", state["total"], sweep_dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        total = None
        if is_multirun():
            total = _read_state(Path(str(config.hydra.sweep.dir))).get("total")
        elif not os.environ.get(THREADS_ENV):
            return
        n = thread_budget(config.hydra, total)
        if n is not None:
            import torch

            torch.set_num_threads(n)
            log.info("torch threads for this job: %d", n)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not is_multirun():
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        line = f"{progress_line(sweep_dir)} (job {config.hydra.job.num} ended)"
        log.info(line)  # the console (also from joblib workers) and the job's run.log
        try:
            with open(sweep_dir / PROGRESS_FILE, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        except OSError as e:
            log.warning("could not append to %s: %s", sweep_dir / PROGRESS_FILE, e)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        n_failed = None
        if self.report:
            from src.report import build_report

            try:
                out = build_report(sweep_dir)
                print(out["message"], flush=True)
                n_failed = out["n_failed"]
            except Exception:  # the jobs' results are on disk; the report can be rebuilt
                log.exception(
                    "the sweep finished but its report failed; rebuild it with "
                    "python -m src.report %s",
                    sweep_dir,
                )
        if n_failed is None:
            n_failed = count_failed(sweep_dir)
        if n_failed:
            # a scheduler (or a shell's &&) must see that the sweep is not whole
            print(
                f"error: {n_failed} job(s) of the sweep in {sweep_dir} failed (listed above and "
                "in report.md); exit code 1",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(1)

"""Throughput of the paper grid (+sweep=paper) on this machine, at the default (MIMIC-IV-sized)
cohort: a fixed slice of the grid run sequentially (Hydra's basic launcher) and with
hydra/launcher=joblib, in jobs per hour and CPU-seconds per job, the full grid's time
extrapolated from it, and where a job's time goes.

The slice: trigger=rare_value, seed 0, poison rates 0 and 0.01, every model (8 jobs), default
detectors. The cohort is generated and cached first (reported separately: a grid pays it once).
CPU-seconds are the children's user + system time (resource.getrusage), so a busy machine slows
the wall clock more than them. The full grid is 1000 jobs: 250 per model, extrapolated per model
from the slice's mean seconds per job of that model.

``--baseline REF`` also runs the joblib slice from a git worktree of commit REF, in the same
benchmark run and on the same cache, so that a change's effect on CPU-seconds per job is
measured against the code before it under the same load.

Usage:  python -m benchmarks.bench_grid [--jobs 2] [--baseline REF] [--out results.json] [overrides ...]
        python -m benchmarks.bench_grid data.n_stays=2000      (a check in about a minute)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.bench_sweep import warm_cache

ROOT = Path(__file__).resolve().parents[1]
SLICE = ["trigger=rare_value", "seed=0", "poison_rate=0,0.01"]
FULL_GRID_JOBS_PER_MODEL = 10 * 5 * 5  # triggers x rates x seeds (conf/sweep/paper.yaml)
PHASES = ("load_data_s", "prepare_s", "fit_s", "evaluate_s", "drift_s")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_slice(
    overrides: list[str], cache: Path, out: Path, launcher: list[str], root: Path = ROOT
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "src.run",
        "-m",
        "+sweep=paper",
        *SLICE,
        *overrides,
        *launcher,
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={out}",
        "hydra.callbacks.sweep.report=false",  # the same work either way; timed on its own below
        "trainer.enable_progress_bar=false",
    ]
    cpu0, t0 = children_cpu(), time.perf_counter()
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if p.returncode != 0:
        sys.exit(f"the slice failed ({' '.join(cmd)}):\n{p.stderr[-3000:]}")
    jobs = [json.loads(r.read_text()) for r in sorted(out.glob("*/results.json"))]
    per_model: dict[str, list[float]] = defaultdict(list)
    phases = dict.fromkeys(PHASES, 0.0)
    detectors = 0.0
    for r in jobs:
        per_model[r["config"]["choices"]["model"]].append(r["timings"]["total_s"])
        for k in PHASES:
            phases[k] += r["timings"].get(k, 0.0)
        detectors += sum((d or {}).get("timing_s") or 0.0 for d in (r["detection"] or {}).values())
        detectors += ((r.get("attribution") or {}).get("timing_s")) or 0.0
    n = len(jobs)
    in_jobs = sum(r["timings"]["total_s"] for r in jobs)
    split = {
        "data (load)": phases["load_data_s"] / n,
        "prepare (split, trigger, poison, views)": phases["prepare_s"] / n,
        "fit (training)": (phases["fit_s"] - detectors) / n,
        "detectors": detectors / n,
        "evaluate and drift": (phases["evaluate_s"] + phases["drift_s"]) / n,
        # the wall clock not spent inside a job: interpreter start, imports, Hydra, writing
        "start and overhead": max(0.0, wall * launcher_parallelism(launcher) - in_jobs) / n,
    }
    return {
        "jobs": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "jobs_per_hour": 3600 * n / wall,
        "cpu_s_per_job": cpu / n,
        "wall_s_per_job_by_model": {m: sum(v) / len(v) for m, v in per_model.items()},
        "split_s_per_job": split,
    }


def launcher_parallelism(launcher: list[str]) -> int:
    for a in launcher:
        if a.startswith("hydra.launcher.n_jobs="):
            return int(a.split("=", 1)[1])
    return 1


def report_seconds(sweep_dir: Path) -> float:
    """Seconds of the sweep report over the slice's folder (run once, as a grid does)."""
    from src.report import build_report

    t0 = time.perf_counter()
    build_report(sweep_dir)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="parallel jobs (joblib n_jobs)")
    ap.add_argument("--cache", default=None, help="cache dir (default: a fresh temporary one)")
    ap.add_argument("--out", default=None, help="write the measurements here as JSON")
    ap.add_argument("--baseline", default=None, help="also run the joblib slice at this git commit")
    ap.add_argument("overrides", nargs="*", help="extra overrides for both runs")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_grid_") as tmp:
        tmp = Path(tmp)
        cache = Path(a.cache) if a.cache else tmp / "cache"
        gen = warm_cache("paper", [o for o in a.overrides if "," not in o], cache)
        print(f"cohort generated and cached in {gen:.1f} s (paid once per grid)", flush=True)
        res = {
            "cores": os.cpu_count(),
            "cohort_s": gen,
            "sequential": run_slice(a.overrides, cache, tmp / "seq", []),
        }
        par = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={a.jobs}"]
        res[f"joblib_x{a.jobs}"] = run_slice(a.overrides, cache, tmp / "par", par)
        names = ["sequential", f"joblib_x{a.jobs}"]
        if a.baseline:
            tree = tmp / "baseline"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), a.baseline],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            try:
                name = f"joblib_x{a.jobs} at {a.baseline}"
                res[name] = run_slice(a.overrides, cache, tmp / "base", par, root=tree)
                names.append(name)
            finally:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
                )
        res["report_s"] = report_seconds(tmp / "seq")
    for name in names:
        r = res[name]
        # the slice's wall clock, scaled by the full grid's in-job seconds over the slice's
        # (each model's mean job, 250 jobs per model): overheads scale with the jobs
        in_slice = sum(r["wall_s_per_job_by_model"].values()) * r["jobs"] / 4
        in_full = sum(FULL_GRID_JOBS_PER_MODEL * s for s in r["wall_s_per_job_by_model"].values())
        r["full_grid_hours"] = r["wall_s"] * in_full / in_slice / 3600
        by_model = ", ".join(f"{m} {s:.1f}" for m, s in r["wall_s_per_job_by_model"].items())
        split = ", ".join(f"{k} {v:.2f}" for k, v in r["split_s_per_job"].items())
        print(
            f"{name:12s} {r['jobs']} jobs in {r['wall_s']:.1f} s: {r['jobs_per_hour']:.0f} jobs/h, "
            f"{r['cpu_s_per_job']:.1f} CPU-s/job; full grid (1000 jobs) ~{r['full_grid_hours']:.1f} h\n"
            f"             s/job by model: {by_model}\n"
            f"             s/job by phase: {split}"
        )
    print(f"report over the slice: {res['report_s']:.1f} s")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

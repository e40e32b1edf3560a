"""Sweep throughput: the same grid run sequentially (Hydra's basic launcher) and in parallel
(joblib launcher), through the real command line, and the speed-up.

The cohort is generated and cached first, so neither timing includes data generation; the
aggregate report is switched off in both (it is the same work either way). The sequential run
keeps torch's default threads (every core), as a user's plain ``-m`` sweep does; the parallel run
gives each job cores // jobs threads (src/sweep.py).

Usage:  python -m benchmarks.bench_sweep [--sweep quick] [--jobs 2] [overrides ...]
        python -m benchmarks.bench_sweep --sweep smoke seed=0       (a check in seconds)
Target: speed-up >= 1.7 with 2 jobs on 2 cores (quick sweep: 12 jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def warm_cache(sweep: str, overrides: list[str], cache: Path) -> float:
    """Generate and cache the sweep's cohort once (every job then only reads it)."""
    from hydra import compose, initialize_config_dir

    from src.data.sources import load_cohort
    from src.run import conf_dir

    plain = [o for o in overrides if "," not in o]  # sweep values are not compose overrides
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("run", overrides=[f"+sweep={sweep}", *plain], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params or {})
    if "experiment" in params:  # e.g. the smoke grid picks its data size through an experiment
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose(
                "run", overrides=[f"+sweep={sweep}", f"experiment={params['experiment']}", *plain]
            )
    t0 = time.perf_counter()
    load_cohort(cfg.data, cache)
    return time.perf_counter() - t0


def run_sweep(
    sweep: str, overrides: list[str], cache: Path, out: Path, launcher: list[str], env: dict
) -> tuple[float, dict]:
    cmd = [
        sys.executable,
        "-m",
        "src.run",
        "-m",
        f"+sweep={sweep}",
        *overrides,
        *launcher,
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={out}",
        "hydra.callbacks.sweep.report=false",
        "trainer.enable_progress_bar=false",
    ]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"sweep failed ({' '.join(cmd)}):\n{p.stderr[-3000:]}")
    status: dict = {}
    for r in out.glob("*/results.json"):
        s = json.loads(r.read_text())["status"]
        status[s] = status.get(s, 0) + 1
    return wall, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", default="quick", help="a grid from conf/sweep/ (default quick)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel jobs (joblib n_jobs)")
    ap.add_argument("--cache", default=None, help="cache dir (default: a fresh temporary one)")
    ap.add_argument(
        "--seq-threads",
        type=int,
        default=None,
        help="torch threads for the sequential run (default: torch's, every core)",
    )
    ap.add_argument("overrides", nargs="*", help="extra overrides for both runs, e.g. seed=0")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        tmp = Path(tmp)
        cache = Path(a.cache) if a.cache else tmp / "cache"
        gen = warm_cache(a.sweep, a.overrides, cache)
        print(f"cohort cached in {gen:.1f} s ({cache})", flush=True)
        env = {k: v for k, v in os.environ.items() if k != "ICU_BACKDOOR_THREADS"}
        env_seq = {**env, "ICU_BACKDOOR_THREADS": str(a.seq_threads)} if a.seq_threads else env
        seq, st_seq = run_sweep(a.sweep, a.overrides, cache, tmp / "seq", [], env_seq)
        print(f"sequential  {seq:7.1f} s  {st_seq}", flush=True)
        par, st_par = run_sweep(
            a.sweep,
            a.overrides,
            cache,
            tmp / "par",
            ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={a.jobs}"],
            env,
        )
        print(f"joblib x{a.jobs}   {par:7.1f} s  {st_par}", flush=True)
    n = sum(st_seq.values())
    print(
        f"\nsweep={a.sweep} jobs={n} cores={os.cpu_count()}: speed-up {seq / par:.2f} "
        f"with {a.jobs} parallel jobs (target >= 1.7 for 2 jobs on 2 idle cores; "
        f"per job: {seq / n:.1f} s sequential, {par / n:.1f} s parallel)"
    )


if __name__ == "__main__":
    main()

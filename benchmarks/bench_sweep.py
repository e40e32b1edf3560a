"""Sweep throughput: the same grid run sequentially (Hydra's basic launcher) and in parallel
(joblib launcher), through the real command line, and the speed-up.

The cohort is generated and cached first, so neither timing includes data generation; the
aggregate report is switched off in both (it is the same work either way). The sequential run
keeps torch's default threads (every core), as a user's plain ``-m`` sweep does; the parallel run
gives each job cores // jobs threads (src/sweep.py).

Usage:  python -m benchmarks.bench_sweep [--sweep quick] [--jobs 2] [overrides ...]
        python -m benchmarks.bench_sweep --sweep smoke seed=0       (a check in seconds)
Target: speed-up >= 1.7 with 2 jobs on 2 cores (quick sweep: 48 jobs).
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
    phases: dict = {}
    for r in out.glob("*/results.json"):
        res = json.loads(r.read_text())
        status[res["status"]] = status.get(res["status"], 0) + 1
        for k, v in (res.get("timings") or {}).items():
            phases[k] = phases.get(k, 0.0) + v
    return wall, status, phases


def fmt_phases(phases: dict, n: int) -> str:
    """Mean seconds per job in each phase of src.experiment (results.json ``timings``)."""
    return ", ".join(f"{k.removesuffix('_s')} {v / max(n, 1):.2f}" for k, v in phases.items())


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
    ap.add_argument(
        "--repeats", type=int, default=2, help="runs of each, interleaved; the best counts"
    )
    ap.add_argument("overrides", nargs="*", help="extra overrides for both runs, e.g. seed=0")
    a = ap.parse_args()

    par_launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={a.jobs}"]
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        tmp = Path(tmp)
        cache = Path(a.cache) if a.cache else tmp / "cache"
        gen = warm_cache(a.sweep, a.overrides, cache)
        print(f"cohort cached in {gen:.1f} s ({cache})", flush=True)
        env = {k: v for k, v in os.environ.items() if k != "ICU_BACKDOOR_THREADS"}
        env_seq = {**env, "ICU_BACKDOOR_THREADS": str(a.seq_threads)} if a.seq_threads else env
        seqs, pars = [], []
        for i in range(a.repeats):  # interleaved, so a slow spell of the machine hits both
            seq, st_seq, ph = run_sweep(a.sweep, a.overrides, cache, tmp / f"seq{i}", [], env_seq)
            n = sum(st_seq.values())
            seqs.append(seq)
            print(f"sequential  {seq:7.1f} s  {st_seq}  per job: {fmt_phases(ph, n)}", flush=True)
            par, st_par, ph = run_sweep(
                a.sweep, a.overrides, cache, tmp / f"par{i}", par_launcher, env
            )
            pars.append(par)
            print(
                f"joblib x{a.jobs}   {par:7.1f} s  {st_par}  per job: {fmt_phases(ph, n)}",
                flush=True,
            )
    ceiling = machine_ceiling(a.jobs)
    seq, par = min(seqs), min(pars)
    print(
        f"\nsweep={a.sweep} jobs={n} cores={os.cpu_count()}: speed-up {seq / par:.2f} "
        f"(best of {a.repeats}: {seq:.1f} s sequential, {par:.1f} s with {a.jobs} joblib jobs; "
        f"each pair {', '.join(f'{x / y:.2f}' for x, y in zip(seqs, pars, strict=True))}). "
        f"Target >= 1.7 for 2 jobs on 2 idle cores.\n"
        f"reference in the same run: {a.jobs} single-threaded torch loops in parallel vs one "
        f"after the other: {ceiling:.2f} (this machine's ceiling); sweep speed-up / ceiling "
        f"{seq / par / ceiling:.2f}"
    )


CEILING_LOOP = """
import sys, time, torch
torch.set_num_threads(1)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(1300, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
opt = torch.optim.Adam(net.parameters())
x, y = torch.randn(256, 1300), torch.rand(256, 1)
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # every copy starts at the same moment
t = time.perf_counter()
for _ in range(1500):
    opt.zero_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
    opt.step()
print(time.perf_counter() - t)
"""


def machine_ceiling(jobs: int) -> float:
    """Speed-up of ``jobs`` copies of an MLP training loop (one torch thread each, no imports
    timed) run at once over the same copies run one after the other: what this machine gives
    perfectly parallel work of the sweep's kind."""

    def loop_times(parallel: bool) -> list[float]:
        cmd = [sys.executable, "-c", CEILING_LOOP, str(time.time() + (8 if parallel else 0))]
        if parallel:
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
            return [float(p.communicate()[0]) for p in procs]
        return [
            float(subprocess.run(cmd, capture_output=True, text=True).stdout) for _ in range(jobs)
        ]

    alone = sum(loop_times(parallel=False))
    together = max(loop_times(parallel=True))  # imports are not timed, and all start together
    return alone / together


if __name__ == "__main__":
    main()

"""The benchmarks still run end to end (tiny sizes; the numbers themselves are not checked here:
they are machine-dependent and reported by the benchmarks, never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_extract_runs_every_reader_and_draws_the_figure(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_extract", "--sizes", "2e4", "--repeats", "2"]
        + ["--workdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (res,) = json.loads((tmp_path / "results.json").read_text())
    for reader in ("zcat", "first", "cached", "cached48", "pandas"):
        assert res[reader]["seconds"] > 0 and res[reader]["peak_mb"] > 0
        samples = res[reader]["samples"]  # every run is kept, the fastest counts
        assert len(samples) == 2 and round(res[reader]["seconds"], 3) == min(samples)
    # the cached extractions read the cache the first one wrote: same stays at 24 h
    assert res["first"]["n_stays"] == res["cached"]["n_stays"] > 0
    assert res["cached48"]["cells"] > 0
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    assert "first/zcat" in p.stdout and "extrapolated to MIMIC-IV v3.1" in p.stdout
    assert "runs at 2e+04" in p.stdout


def test_sweep_benchmark_phase_means():
    from benchmarks.bench_sweep import fmt_phases

    assert fmt_phases({"prepare_s": 3.0, "fit_s": 1.5}, 3) == "prepare 1.00, fit 0.50"

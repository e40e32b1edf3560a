"""Run ``python -m src.run`` as a user does (a subprocess from the repository root)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def src_run(*args: str, cache: Path, timeout: float) -> subprocess.CompletedProcess:
    """``python -m src.run *args`` with its own cache and no progress bar; output captured."""
    cmd = [
        sys.executable,
        "-m",
        "src.run",
        *args,
        f"paths.cache_dir={cache}",
        "trainer.enable_progress_bar=false",
    ]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )

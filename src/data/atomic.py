"""Publish a folder atomically: readers see it whole or not at all.

Every cache here (synthetic tables, the MIMIC-IV events cache, extracted cohorts) is filled in a
temporary sibling folder and then renamed into place. Two processes racing to fill the same
entry (parallel sweep jobs on an empty cache) both succeed: the first rename wins and the other
drops its equivalent copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block ends without error, rename it to
    ``path`` (unless another process published ``path`` first); on error, remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished first; its content is equivalent
            if not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

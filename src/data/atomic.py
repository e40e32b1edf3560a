"""Publish a folder or a file atomically: readers see it whole or not at all.

Every cache here (synthetic tables, the MIMIC-IV events cache, extracted cohorts, splits) and
every results.json is filled in a temporary sibling and then renamed into place. Two processes
racing to fill the same cache entry (parallel sweep jobs on an empty cache) both succeed: the
first rename of a folder wins and the other drops its equivalent copy; for a file the last wins.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


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


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Yield a file opened (``mode``) beside ``path``; when the block ends without error, make it
    readable by all (the cache may be shared) and rename it to ``path``; on error, remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Publish a folder or a file atomically: readers see it whole or not at all.

Every cache here (synthetic tables, the MIMIC-IV events cache, extracted cohorts, splits) and
every results.json is filled in a temporary sibling and then renamed into place. Two processes
racing to fill the same cache entry (parallel sweep jobs on an empty cache) both succeed: the
first rename of a folder wins and the other drops its equivalent copy; for a file the last wins.

A temporary sibling is named ``.<name>.tmp-<host>-<pid>-<random>``. A process killed while
filling one (out of memory, a scheduler's time limit) leaves it behind, and on MIMIC-IV such a
folder holds gigabytes: the next ``atomic_dir`` for the same path removes the ones whose
process is gone (same host, no such pid) or that are older than ``STALE_AFTER_S`` (another
host, where the pid says nothing), never one a live process is still filling.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

STALE_AFTER_S = 24 * 3600


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_siblings(path: Path, now: float | None = None) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by dead processes (see the module
    docstring); return what was removed."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    removed = []
    for p in path.parent.glob(f".{path.name}.tmp-*"):
        rest = p.name[len(f".{path.name}.tmp-") :]
        head, _, _ = rest.rpartition("-")  # <host>-<pid>
        p_host, _, p_pid = head.rpartition("-")
        try:
            age = now - p.stat().st_mtime
        except FileNotFoundError:
            continue
        dead = p_host == host and p_pid.isdigit() and not _pid_alive(int(p_pid))
        if dead or age > STALE_AFTER_S:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            log.warning("removed %s, left by a process that was stopped while writing it", p)
            removed.append(p)
    return removed


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block ends without error, rename it to
    ``path`` (unless another process published ``path`` first); on error, remove it. Stale
    temporary siblings of dead processes are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
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
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def discard(path: Path, what: str) -> None:
    """Remove a damaged cache entry: renamed aside first (atomic, so a concurrent reader sees
    it whole or not at all), then deleted. An entry this process may not rename (a read-only
    shared cache) is named for the user to delete."""
    import uuid

    path = Path(path)
    aside = path.with_name(f".{path.name}.damaged-{uuid.uuid4().hex[:8]}")
    try:
        path.rename(aside)
    except FileNotFoundError:  # another process removed or replaced it first
        return
    except OSError as e:
        raise OSError(
            f"the {what} {path} is damaged and this process cannot remove it ({e}): "
            f"delete the folder {path} and run again"
        ) from e
    shutil.rmtree(aside, ignore_errors=True)

"""Where a run's memory comes from: glibc's malloc, set once per process to keep freed blocks.

glibc serves blocks above a dynamic threshold (from 128 KiB) with mmap and gives them back at
free; a training step's activations and gradients (a few hundred KiB to a few MiB) are then
fresh pages every step, each faulted in by the kernel (measured in
docs/findings/issue20_scale/README.md). ``MALLOC_SETTINGS`` keeps such blocks in the heap for
reuse. It changes where
memory comes from, not the arithmetic: the numbers are the same (the determinism test in
tests/test_cli.py runs one side with glibc's defaults).
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger(__name__)

MALLOC_SETTINGS = {"M_MMAP_THRESHOLD": 32 * 2**20, "M_TRIM_THRESHOLD": 2**30}
_MALLOPT_PARAM = {"M_TRIM_THRESHOLD": -1, "M_MMAP_THRESHOLD": -3}  # glibc's malloc.h
ALLOCATOR_ENV = "ICU_BACKDOOR_MALLOC"  # "default" leaves glibc's own settings


@functools.cache
def keep_freed_memory() -> dict | None:
    """Apply ``MALLOC_SETTINGS`` with ``mallopt`` once per process and return them, or None where
    the C library is not glibc or ``ICU_BACKDOOR_MALLOC=default`` is set. results.json records
    the answer (``environment.malloc``, through ``applied``)."""
    import ctypes
    import platform

    if os.environ.get(ALLOCATOR_ENV, "") == "default" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    for name, value in MALLOC_SETTINGS.items():
        if mallopt(_MALLOPT_PARAM[name], value) != 1:  # 1 is success
            log.warning("mallopt(%s, %d) was refused; glibc's default stays", name, value)
            return None
    return dict(MALLOC_SETTINGS)


def applied() -> dict | None:
    """What ``keep_freed_memory`` set in this process, without setting anything: None before it
    ran (a config check, a failure record) or where it set nothing."""
    return keep_freed_memory() if keep_freed_memory.cache_info().currsize else None

"""Freed memory kept for reuse in the command line's batch jobs (glibc malloc).

glibc serves every allocation above its mmap threshold (at most 32 MB) with a mapping
of its own and unmaps it when the block is freed, so the next array of that size is
faulted in again page by page. A 20M-row job allocates and frees 160 MB arrays of
scores, offsets and gathered rows many times: in ``benchmarks/pipeline.py`` (1M
entities) ``gdmix train`` took 1.5 million page faults and 5.5 s of system time for a
3.7 GB peak. The ``gdmix`` command's batch commands (every one but ``serve``, a
long-lived process that should hand memory back) therefore have glibc serve large
blocks from its heap and keep what is freed there (``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD``
2 GB): 1.05 million faults and 4.1 s, at a peak RSS about 8% higher (blocks freed in the
middle of the heap are reused, not returned). Programs that call :func:`gdmix.fit`
keep their allocator's settings; ``GDMIX_MALLOC_REUSE=0`` keeps them in the command
too. Other C libraries (musl, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["reuse_freed_memory"]

logger = logging.getLogger("gdmix")

#: glibc's ``mallopt`` parameters (``<malloc.h>``).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Free memory at the top of the heap beyond this is given back to the kernel.
TRIM_THRESHOLD = 2**31 - 1


def reuse_freed_memory() -> bool:
    """Have glibc keep freed large blocks in its heap for the next allocations.

    Returns whether the setting was made: never off Linux with glibc, nor with
    ``GDMIX_MALLOC_REUSE=0``. Call it once at the start of a batch process; it cannot
    be undone for the blocks already kept.
    """
    if os.environ.get("GDMIX_MALLOC_REUSE") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if done:
        logger.debug("glibc malloc: large blocks from the heap, freed memory kept for reuse")
    return done

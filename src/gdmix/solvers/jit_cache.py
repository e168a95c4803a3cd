"""Say once when gdmix's compiled kernels are being compiled (the first run only).

The numba kernels are cached on disk (``NUMBA_CACHE_DIR``, or ``__pycache__`` next to
the sources). A first run compiles them, which takes about a minute on two cores and
would otherwise look like a hang.
"""

from __future__ import annotations

import importlib
import logging
import os

__all__ = ["announce_compilation", "uncached_kernels"]

logger = logging.getLogger("gdmix")

_MODULES = ("gdmix.losses", "gdmix.metrics", "gdmix.data.layout", "gdmix.data.features",
            "gdmix.solvers.newton", "gdmix.solvers.lockstep", "gdmix.solvers.subspace",
            "gdmix.solvers.fixed_kernels", "gdmix.solvers.laplace")  # fmt: skip
_announced = False


def uncached_kernels() -> tuple[list[str], list[str], str | None]:
    """Names of the compiled kernels with no entry in the on-disk cache, of those with
    one, and the cache folder."""
    missing: list[str] = []
    cached: list[str] = []
    folder = None
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr, value in vars(module).items():
            cache = getattr(value, "_cache", None)
            index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
            if index is None:
                continue
            folder = os.path.dirname(index)
            (cached if os.path.exists(index) else missing).append(f"{name}.{attr}")
    return missing, cached, folder


def announce_compilation() -> None:
    """Log (once per process, at INFO: the command line shows it unless ``--quiet``) that
    kernels are being compiled, when none is cached yet.

    A job compiles only the kernels it uses, so some may stay uncached for good (the wide
    shard kernels, in a job without wide shards); a cache holding any of gdmix's kernels
    means the first run is over.
    """
    global _announced
    if _announced:
        return
    _announced = True
    try:
        missing, cached, folder = uncached_kernels()
    except Exception:  # numba internals moved: say nothing rather than fail
        return
    if missing and not cached:
        logger.info(
            "compiling gdmix's kernels (%d of them); this happens once and takes about a "
            "minute; they are cached in %s",
            len(missing), folder,
        )  # fmt: skip

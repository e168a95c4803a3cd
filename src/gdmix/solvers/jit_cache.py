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

_MODULES = ("gdmix.losses", "gdmix.solvers.newton", "gdmix.solvers.lockstep",
            "gdmix.solvers.subspace")  # fmt: skip
_announced = False


def uncached_kernels() -> tuple[list[str], str | None]:
    """Names of the compiled kernels with no entry in the on-disk cache, and the cache
    folder."""
    missing: list[str] = []
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
            if not os.path.exists(index):
                missing.append(f"{name}.{attr}")
    return missing, folder


def announce_compilation() -> None:
    """Log (once per process) that kernels are being compiled, when some are not cached."""
    global _announced
    if _announced:
        return
    _announced = True
    try:
        missing, folder = uncached_kernels()
    except Exception:  # numba internals moved: say nothing rather than fail
        return
    if missing:
        logger.warning(
            "compiling gdmix's kernels (%d of them); this happens once and takes about a "
            "minute; they are cached in %s",
            len(missing), folder,
        )  # fmt: skip

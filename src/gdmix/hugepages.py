"""Transparent huge pages for the command line's large arrays.

numpy asks the kernel for transparent huge pages on every large allocation
(``madvise(MADV_HUGEPAGE)``). Where the kernel's defrag setting is ``madvise`` (the
default of many distributions and cloud images), each such fault may stop to compact
memory first. Reading a 20M-row table is about 2 GB of fresh arrays; on a 2-core VM
those stalls took 5 s of a 2 s read (``benchmarks/pipeline.py``), while the solvers ran
no faster on huge pages. The ``gdmix`` command therefore stops numpy's advice on such
kernels; programs that call :func:`gdmix.fit` keep their own numpy settings.
``GDMIX_NUMPY_HUGEPAGES=1`` keeps numpy's advice in the command too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["avoid_compaction_stalls"]

logger = logging.getLogger("gdmix")

DEFRAG = Path("/sys/kernel/mm/transparent_hugepage/defrag")


def _compacts_on_advice(setting: str) -> bool:
    """Whether a ``defrag`` setting (its selected value in brackets) makes a fault in a
    region advised for huge pages compact memory synchronously."""
    selected = setting[setting.find("[") + 1 : setting.find("]")] if "[" in setting else ""
    return selected in ("madvise", "defer+madvise")


def avoid_compaction_stalls(defrag: Path = DEFRAG) -> bool:
    """Stop numpy advising huge pages when the kernel would compact memory for them.

    Returns whether numpy's advice was turned off (never on other systems, nor with
    ``GDMIX_NUMPY_HUGEPAGES=1``).
    """
    if os.environ.get("GDMIX_NUMPY_HUGEPAGES") == "1":
        return False
    try:
        setting = defrag.read_text()
    except OSError:  # not Linux, or no transparent huge pages
        return False
    if not _compacts_on_advice(setting):
        return False
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    switch = getattr(core.multiarray, "_set_madvise_hugepage", None)
    if switch is None:
        return False
    switch(False)
    logger.debug("numpy's huge-page advice off (transparent_hugepage/defrag: %s)", setting.strip())
    return True

"""The first run says that kernels are being compiled (once), a cached run says nothing."""

from __future__ import annotations

import os
import subprocess
import sys

_SCRIPT = """
import logging
logging.basicConfig(level=logging.INFO, format="%(message)s")
from gdmix.solvers.jit_cache import announce_compilation, uncached_kernels
missing, cached, folder = uncached_kernels()
print(len(missing), flush=True)
announce_compilation()
announce_compilation()
"""


def _run(cache: str) -> tuple[int, str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                          env=env, timeout=120, check=True)  # fmt: skip
    return int(proc.stdout.strip()), proc.stderr


def test_an_empty_cache_is_announced_once(tmp_path) -> None:
    n_missing, err = _run(str(tmp_path / "empty-cache"))
    assert n_missing > 5
    assert err.count("compiling gdmix's kernels") == 1
    assert str(tmp_path / "empty-cache") in err


_COMPILE_ONE = """
from gdmix.solvers.jit_cache import uncached_kernels
import gdmix.losses
before, _, _ = uncached_kernels()
gdmix.losses.loss_scalar(1.0, 0.5)  # compiled now, and written to the cache
after, cached, _ = uncached_kernels()
print("gdmix.losses.loss_scalar" in before, "gdmix.losses.loss_scalar" in after)
import logging
logging.basicConfig(level=logging.INFO, format="%(message)s")
from gdmix.solvers.jit_cache import announce_compilation
announce_compilation()  # one kernel cached: not a first run any more
"""


def test_a_compiled_kernel_counts_as_cached(tmp_path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", _COMPILE_ONE], capture_output=True, text=True,
                          env=env, timeout=120, check=True)  # fmt: skip
    assert proc.stdout.split() == ["True", "False"]
    assert "compiling" not in proc.stderr

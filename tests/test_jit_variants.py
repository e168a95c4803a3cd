"""Serial and parallel variants of one kernel keep apart in numba's on-disk cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_KERNEL = """
import numba
import numpy as np
from numba import prange

from gdmix.jit_variants import serial_and_parallel


def _threads_py(out):
    for i in prange(out.shape[0]):
        out[i] = numba.get_thread_id()


threads_ser, threads_par = serial_and_parallel(_threads_py)
"""

_CALL = """
import json, sys
import numpy as np
from numba.np.ufunc.parallel import _launch_threads
import kernel_module
_launch_threads()  # get_thread_id in a serial kernel loaded from the cache needs the pool
out = np.zeros(4000, dtype=np.int64)
getattr(kernel_module, sys.argv[1])(out)
print(json.dumps(sorted(set(out.tolist()))))
"""


def _run(tmp_path, which: str) -> list[int]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", _CALL, which], env=env, check=True,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    return json.loads(out.stdout)


def test_a_parallel_kernel_stays_parallel_after_its_serial_twin_was_cached(tmp_path):
    (tmp_path / "kernel_module.py").write_text(textwrap.dedent(_KERNEL))
    assert _run(tmp_path, "threads_ser") == [0]  # compiled and cached first
    assert _run(tmp_path, "threads_par") == [0, 1]  # compiled for itself, on 2 threads
    assert _run(tmp_path, "threads_par") == [0, 1]  # and loaded from its own cache entry
    assert _run(tmp_path, "threads_ser") == [0]
    indexes = sorted(p.name for p in (tmp_path / "cache").rglob("*.nbi"))
    assert len(indexes) == 2 and any("__parallel" in name for name in indexes)

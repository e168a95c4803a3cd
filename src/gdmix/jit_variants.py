"""Serial and parallel compilations of one kernel, each with its own on-disk cache entry.

Many kernels run threaded on large inputs and serially on small ones. numba keys its
on-disk cache by the function's bytecode and argument types, not by the compile options
(numba issue #6845): ``njit(cache=True)(f)`` and ``njit(cache=True, parallel=True)(f)``
share entries, and later processes load whichever was compiled last for both. After a
small job had cached the serial twin, a 1M-entity ``gdmix train`` ran its random-effect
solve single-threaded (11 s instead of 5.7 s on 2 cores). :func:`serial_and_parallel`
compiles the parallel variant from a copy of the function under another qualified name,
which numba caches in files of its own.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numba

__all__ = ["serial_and_parallel"]

#: Appended to the qualified name of the parallel variant's function (its cache files).
PARALLEL_SUFFIX = "__parallel"


def serial_and_parallel(py_func: Callable[..., Any], **options: Any) -> tuple[Any, Any]:
    """``(serial, parallel)``: ``py_func`` compiled with ``numba.njit(cache=True,
    **options)`` and with ``parallel=True`` added, cached apart.

    Parameters
    ----------
    py_func : function
        The kernel's Python source (``prange`` loops run serially in the first).
    **options
        Other ``numba.njit`` options for both (``fastmath``...).

    Returns
    -------
    tuple of numba dispatchers
    """
    serial = numba.njit(cache=True, **options)(py_func)
    twin = types.FunctionType(
        py_func.__code__,
        py_func.__globals__,
        py_func.__name__,
        py_func.__defaults__,
        py_func.__closure__,
    )
    twin.__qualname__ = py_func.__qualname__ + PARALLEL_SUFFIX
    twin.__module__ = py_func.__module__
    twin.__kwdefaults__ = py_func.__kwdefaults__
    twin.__doc__ = py_func.__doc__
    parallel = numba.njit(cache=True, parallel=True, **options)(twin)
    return serial, parallel

"""Passes over large float64 arrays (one value per table row) on every thread.

The trainer adds score arrays of every table row (offsets for each coordinate's update,
the total score) many times per pass, and checks each update's scores: on 20M rows each
numpy addition or reduction is one thread over hundreds of MB. :func:`sum_in_order`
adds up to three arrays per pass on all threads, left to right, so that the floats are
numpy's ``(a + b) + c``; :func:`max_abs` is ``max(|a|)`` in one pass; :func:`filled` is
``np.full`` with the new memory's pages mapped on every thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
from numba import prange

__all__ = ["fill_in_place", "filled", "max_abs", "sum_in_order"]

#: Arrays shorter than this are added by numpy (waking threads costs more).
PARALLEL_MIN_SIZE = 1 << 20


@numba.njit(cache=True, parallel=True)
def _add2(a, b, out):  # type: ignore[no-untyped-def]
    for i in prange(out.shape[0]):
        out[i] = a[i] + b[i]


@numba.njit(cache=True, parallel=True)
def _add3(a, b, c, out):  # type: ignore[no-untyped-def]
    for i in prange(out.shape[0]):
        out[i] = (a[i] + b[i]) + c[i]


def sum_in_order(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``arrays[0] + arrays[1] + ...`` (added left to right) as a new writeable array.

    Parameters
    ----------
    arrays : sequence of ndarray
        At least one 1-D array; all of one length. Contiguous float64 arrays of at
        least :data:`PARALLEL_MIN_SIZE` values are added on all threads.

    Returns
    -------
    ndarray of float64
        The sum (a copy when ``arrays`` holds one array).
    """
    if not arrays:
        raise ValueError("nothing to add")
    first = arrays[0]
    if len(arrays) == 1:
        return np.array(first, dtype=np.float64)
    compiled = len(first) >= PARALLEL_MIN_SIZE and all(
        a.dtype == np.float64 and a.ndim == 1 and a.flags.c_contiguous and len(a) == len(first)
        for a in arrays
    )
    if not compiled:
        out = np.add(first, arrays[1], dtype=np.float64)
        for a in arrays[2:]:
            out += a
        return out
    out = np.empty(len(first))
    if len(arrays) == 2:
        _add2(first, arrays[1], out)
        return out
    _add3(first, arrays[1], arrays[2], out)
    for a in arrays[3:]:
        _add2(out, a, out)
    return out


@numba.njit(cache=True, parallel=True)
def _max_abs(a):  # type: ignore[no-untyped-def]
    largest = 0.0
    nan = 0
    for i in prange(a.shape[0]):
        v = abs(a[i])
        largest = max(largest, v)
        nan += v != v
    return np.nan if nan > 0 else largest


def max_abs(a: np.ndarray) -> float:
    """``max(|a|)`` (0 for an empty array, NaN when ``a`` holds a NaN), in one pass."""
    if len(a) < PARALLEL_MIN_SIZE or a.dtype != np.float64 or not a.flags.c_contiguous:
        if not len(a):
            return 0.0
        return max(float(np.max(a)), -float(np.min(a)))
    return float(_max_abs(a))


@numba.njit(cache=True, parallel=True)
def _fill(out, value):  # type: ignore[no-untyped-def]
    for i in prange(out.shape[0]):
        out[i] = value


def fill_in_place(out: np.ndarray, value: Any) -> None:
    """Set every element of the 1-D array ``out`` to ``value`` (of ``out``'s type), in
    order on all threads: fresh memory is mapped page by page as it is written."""
    _fill(out, out.dtype.type(value))


def filled(n: int, value: float) -> np.ndarray:
    """``np.full(n, value)`` (float64), written on all threads for large ``n``."""
    if n < PARALLEL_MIN_SIZE:
        return np.full(n, value, dtype=np.float64)
    out = np.empty(n)
    fill_in_place(out, value)
    return out

"""Row access for the compiled solvers: one kernel source for CSR and dense designs.

A design reaches a kernel as ``(data, indptr, indices)``. For a CSR matrix these are its
three arrays; for a dense block, ``data`` is the 2-D array itself and ``indptr`` and
``indices`` are unused placeholders. Kernels walk a row's stored entries with::

    lo, hi = row_span(data, indptr, row)
    for q in range(lo, hi):
        v = entry_value(data, row, q)
        if skip_entry(data, v):
            continue
        j = entry_column(data, indices, q)

numba picks the implementation from the type of ``data`` when it compiles (a 1-D array
is CSR, a 2-D array dense), so each compiled kernel has no branch on the layout. A dense
row's zeros are skipped where a kernel needs the entries a CSR matrix would store, so
both layouts give the same results.
"""

from __future__ import annotations

from typing import Any

import numba
from numba.extending import overload

__all__ = ["coef_at", "entry_column", "entry_value", "row_span", "skip_entry"]


@numba.njit(cache=True, inline="always")
def coef_at(cptr, cfeat, cval, e, j):  # type: ignore[no-untyped-def]
    """Coefficient of feature ``j`` of entity ``e`` in sparse (CSR) coefficient rows whose
    feature ids are sorted within each row: a binary search, 0 when not stored."""
    lo, hi = cptr[e], cptr[e + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if cfeat[mid] < j:
            lo = mid + 1
        else:
            hi = mid
    if lo < cptr[e + 1] and cfeat[lo] == j:
        return cval[lo]
    return 0.0


def row_span(data: Any, indptr: Any, row: int) -> tuple[int, int]:
    """Range of entry numbers ``q`` of ``row`` (compiled code only)."""
    raise NotImplementedError("row_span is for compiled code")


def entry_value(data: Any, row: int, q: int) -> float:
    """Value of entry ``q`` of ``row`` (compiled code only)."""
    raise NotImplementedError("entry_value is for compiled code")


def entry_column(data: Any, indices: Any, q: int) -> int:
    """Column of entry ``q`` (compiled code only)."""
    raise NotImplementedError("entry_column is for compiled code")


def skip_entry(data: Any, value: float) -> bool:
    """Whether an entry is a dense zero that CSR would not store (compiled code only)."""
    raise NotImplementedError("skip_entry is for compiled code")


@overload(row_span, inline="always")
def _row_span(data, indptr, row):  # type: ignore[no-untyped-def]
    if data.ndim == 2:
        return lambda data, indptr, row: (0, data.shape[1])
    return lambda data, indptr, row: (indptr[row], indptr[row + 1])


@overload(entry_value, inline="always")
def _entry_value(data, row, q):  # type: ignore[no-untyped-def]
    if data.ndim == 2:
        return lambda data, row, q: data[row, q]
    return lambda data, row, q: data[q]


@overload(entry_column, inline="always")
def _entry_column(data, indices, q):  # type: ignore[no-untyped-def]
    if data.ndim == 2:
        return lambda data, indices, q: q
    return lambda data, indices, q: indices[q]


@overload(skip_entry, inline="always")
def _skip_entry(data, value):  # type: ignore[no-untyped-def]
    if data.ndim == 2:
        return lambda data, value: value == 0
    return lambda data, value: False

"""Entity layout: rows grouped by entity without copying them.

For a random-effect coordinate, the rows of the training table are described by
a permutation that sorts them by entity and the start of each entity's segment
in that permutation (the paper's "super-record", as views instead of copies). The
permutation comes from one compiled counting sort of the entity codes (two passes over
the rows, stable), never from a general-purpose sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
from numba import prange

from gdmix.array_kernels import fill_in_place
from gdmix.jit_variants import serial_and_parallel

__all__ = [
    "EntityLayout",
    "counting_sort",
    "counting_sort_positions",
    "downsample_weights",
    "empty_touched",
    "group_rows",
    "layout_from_codes",
    "take",
]


@dataclass(frozen=True)
class EntityLayout:
    """Rows grouped by entity.

    Attributes
    ----------
    entity_ids : pandas.Index
        The distinct entity ids, in code order (sorted).
    codes : ndarray of int64, shape (n_rows,)
        Entity code of every row.
    perm : ndarray of int64, shape (n_rows,)
        Row numbers sorted by entity code (stable: a row keeps its order in its entity).
    starts : ndarray of int64, shape (n_entities + 1,)
        Entity ``e`` owns ``perm[starts[e]:starts[e + 1]]``.
    """

    entity_ids: pd.Index
    codes: np.ndarray
    perm: np.ndarray
    starts: np.ndarray

    @property
    def n_entities(self) -> int:
        """Number of distinct entities."""
        return len(self.entity_ids)

    @property
    def counts(self) -> np.ndarray:
        """Rows per entity."""
        return np.diff(self.starts)


#: Counting sorts of at least this many rows run on several threads (one histogram
#: per thread, so only while the histograms are small next to the rows).
_PARALLEL_MIN_ROWS = 1_000_000


def _counting_sort_py(codes, n_groups, n_chunks, with_positions):  # type: ignore[no-untyped-def]
    # Rows are cut into n_chunks runs; each run is counted and placed by one thread, with
    # its own slots in every group placed after the slots of the runs before it (stable).
    n = codes.shape[0]
    slots = np.zeros((n_chunks, n_groups), dtype=np.int64)
    bad = np.zeros(n_chunks, dtype=np.int64)
    for k in prange(n_chunks):  # counted and checked in one pass over the codes
        for i in range(n * k // n_chunks, n * (k + 1) // n_chunks):
            c = codes[i]
            if c < 0 or c >= n_groups:
                bad[k] += 1
            else:
                slots[k, c] += 1
    if bad.sum() > 0:
        raise ValueError("codes must lie in [0, n_groups)")
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    running = 0
    for g in range(n_groups):
        starts[g] = running
        for k in range(n_chunks):
            count = slots[k, g]
            slots[k, g] = running
            running += count
    starts[n_groups] = running
    order = np.empty(n, dtype=np.int64)
    for i in prange(n):  # map the pages in order before writing them in random order
        order[i] = 0
    positions = np.empty(n if with_positions else 0, dtype=np.int64)
    for k in prange(n_chunks):
        for i in range(n * k // n_chunks, n * (k + 1) // n_chunks):
            c = codes[i]
            p = slots[k, c]
            order[p] = i
            if with_positions:
                positions[i] = p
            slots[k, c] = p + 1
    return order, starts, positions


_counting_sort_ser, _counting_sort_par = serial_and_parallel(_counting_sort_py)


def _counting_sort(
    codes: np.ndarray, n_groups: int, with_positions: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    n_groups = int(n_groups)
    n_chunks = 1
    if len(codes) >= _PARALLEL_MIN_ROWS:
        n_chunks = max(1, min(numba.get_num_threads(), len(codes) // max(n_groups, 1)))
    kernel = _counting_sort_par if n_chunks > 1 else _counting_sort_ser
    return kernel(codes, n_groups, n_chunks, with_positions)


def counting_sort(codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by integer code, stably, in O(n + n_groups).

    Parameters
    ----------
    codes : ndarray of int, shape (n_rows,)
        Group code of every row, ``0 <= code < n_groups``.
    n_groups : int
        Number of groups (groups without rows get empty segments).

    Returns
    -------
    order : ndarray of int64, shape (n_rows,)
        Row numbers sorted by code; rows of one group keep their order.
    starts : ndarray of int64, shape (n_groups + 1,)
        Group ``g`` owns ``order[starts[g]:starts[g + 1]]``.

    Raises
    ------
    ValueError
        When a code lies outside ``[0, n_groups)``.
    """
    order, starts, _ = _counting_sort(codes, n_groups, False)
    return order, starts


def counting_sort_positions(
    codes: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`counting_sort` that also returns ``positions``, its inverse permutation
    (row ``i`` is at ``order[positions[i]]``), from the same pass."""
    return _counting_sort(codes, n_groups, True)


def empty_touched(shape: int | tuple[int, ...], dtype: object = np.float64) -> np.ndarray:
    """A new C-ordered array whose memory is already mapped (zero-filled in order, on all
    threads).

    An array that a compiled loop then fills in random order (a scatter) would otherwise
    take a page fault at each first write in random order, which on a virtual machine
    can cost several times the scatter itself.
    """
    out = np.empty(shape, dtype=dtype)
    if out.size >= _PARALLEL_MIN_ROWS:
        fill_in_place(out.reshape(-1), 0)
    return out


def _take3_py(a, b, c, rows, out_a, out_b, out_c):  # type: ignore[no-untyped-def]
    for i in prange(rows.shape[0]):
        r = rows[i]
        out_a[i] = a[r]
        out_b[i] = b[r]
        out_c[i] = c[r]


_take3_par = numba.njit(cache=True, parallel=True)(_take3_py)


def take(rows: np.ndarray, *columns: np.ndarray) -> list[np.ndarray]:
    """``[column[rows] for column in columns]`` for 1-D float64 columns, gathered on all
    threads, three columns per pass over ``rows``."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    cols = [np.ascontiguousarray(c, dtype=np.float64) for c in columns]
    if len(rows) < _PARALLEL_MIN_ROWS:
        return [c[rows] for c in cols]
    out = [np.empty(len(rows)) for _ in cols]
    for k in range(0, len(cols), 3):
        src, dst = cols[k : k + 3], out[k : k + 3]
        pad = 3 - len(src)
        spare = np.empty(len(rows)) if pad else None
        _take3_par(*src, *[src[0]] * pad, rows, *dst, *[spare] * pad)
    return out


def group_rows(entity_values: pd.Series | np.ndarray) -> EntityLayout:
    """Group rows by entity id.

    Parameters
    ----------
    entity_values : Series or ndarray
        The entity id of every row (no nulls).

    Returns
    -------
    EntityLayout
    """
    codes, uniques = pd.factorize(pd.Series(entity_values), sort=True)
    codes = codes.astype(np.int64)
    perm, starts = counting_sort(codes, len(uniques))
    return EntityLayout(pd.Index(uniques), codes, perm, starts)


def layout_from_codes(codes: np.ndarray, n_entities: int, entity_ids: pd.Index) -> EntityLayout:
    """Group rows by known entity codes (``0 <= code < n_entities``).

    Entities without rows get empty segments.
    """
    codes = np.asarray(codes, dtype=np.int64)
    perm, starts = counting_sort(codes, n_entities)
    return EntityLayout(entity_ids, codes, perm, starts)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fixed, platform-independent hash of uint64 values."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def downsample_weights(
    layout: EntityLayout, max_rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministically keep at most ``max_rows`` rows per entity.

    Each row gets a hash key from its row number and ``seed``; in every entity with
    more than ``max_rows`` rows, the ``max_rows`` rows with the smallest keys are kept
    and re-weighted by ``n_rows / max_rows`` so that the entity's total weight is kept.

    Returns
    -------
    perm, starts : ndarray of int64
        The layout of the kept rows.
    multiplier : ndarray of float64, shape (n_rows,)
        Weight multiplier of every row (0 for dropped rows).
    """
    n = len(layout.codes)
    counts = layout.counts
    keys = _mix64(np.arange(n, dtype=np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64))
    order = np.lexsort((keys, layout.codes))
    rank = np.arange(n, dtype=np.int64) - np.repeat(layout.starts[:-1], counts)
    keep = rank < max_rows
    kept_rows = order[keep]
    kept_counts = np.minimum(counts, max_rows)
    multiplier = np.zeros(n)
    scale = counts / kept_counts.clip(min=1)
    multiplier[kept_rows] = np.repeat(scale, kept_counts)
    perm = np.sort(kept_rows)
    perm = perm[np.argsort(layout.codes[perm], kind="stable")]
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(kept_counts, out=starts[1:])
    return perm.astype(np.int64), starts, multiplier

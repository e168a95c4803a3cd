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

__all__ = [
    "EntityLayout",
    "counting_sort",
    "counting_sort_positions",
    "downsample_weights",
    "group_rows",
    "layout_from_codes",
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


@numba.njit(cache=True)
def _counting_sort(codes, n_groups, with_positions):  # type: ignore[no-untyped-def]
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(codes.shape[0]):
        c = codes[i]
        if c < 0 or c >= n_groups:
            raise ValueError("codes must lie in [0, n_groups)")
        starts[c + 1] += 1
    for g in range(n_groups):
        starts[g + 1] += starts[g]
    nxt = starts[:-1].copy()
    order = np.empty(codes.shape[0], dtype=np.int64)
    positions = np.empty(codes.shape[0] if with_positions else 0, dtype=np.int64)
    for i in range(codes.shape[0]):
        c = codes[i]
        p = nxt[c]
        order[p] = i
        if with_positions:
            positions[i] = p
        nxt[c] = p + 1
    return order, starts, positions


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
    order, starts, _ = _counting_sort(np.ascontiguousarray(codes, dtype=np.int64),
                                      int(n_groups), False)  # fmt: skip
    return order, starts


def counting_sort_positions(
    codes: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`counting_sort` that also returns ``positions``, its inverse permutation
    (row ``i`` is at ``order[positions[i]]``), from the same pass."""
    return _counting_sort(np.ascontiguousarray(codes, dtype=np.int64), int(n_groups), True)


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

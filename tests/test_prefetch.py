"""The prefetch hint changes no result, whatever address it is given."""

from __future__ import annotations

import numba
import numpy as np

from gdmix.prefetch import PREFETCH_DISTANCE, prefetch


@numba.njit
def _gather_with_hints(table, keys, stray):  # type: ignore[no-untyped-def]
    out = np.empty(keys.shape[0])
    for i in range(keys.shape[0]):
        prefetch(table, keys[(i + PREFETCH_DISTANCE) % keys.shape[0]] * table.shape[1])
        prefetch(table, stray)  # far outside the array: a hint never faults
        prefetch(keys, -stray)
        out[i] = table[keys[i], 0] + table[keys[i], table.shape[1] - 1]
    return out


def test_a_gather_with_prefetches_equals_numpy():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(5000, 7))
    keys = rng.integers(0, 5000, size=20_000)
    expected = table[keys, 0] + table[keys, -1]
    for stray in (0, 10**9, -(10**9)):
        np.testing.assert_array_equal(_gather_with_hints(table, keys, stray), expected)

"""Element-wise sums on all threads give numpy's left-to-right floats."""

from __future__ import annotations

import numpy as np
import pytest

from gdmix.array_kernels import PARALLEL_MIN_SIZE, fill_in_place, filled, max_abs, sum_in_order


@pytest.mark.parametrize("n", [10, PARALLEL_MIN_SIZE + 3])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_the_sum_is_numpys_left_to_right(n, k):
    rng = np.random.default_rng(k)
    # Magnitudes far apart: any other order of the additions rounds differently.
    arrays = [rng.normal(size=n) * 10.0 ** rng.integers(-8, 9, size=n) for _ in range(k)]
    expected = arrays[0].copy()
    for a in arrays[1:]:
        expected = expected + a
    got = sum_in_order(arrays)
    np.testing.assert_array_equal(got, expected)
    assert got.flags.writeable and got.dtype == np.float64
    assert not any(np.shares_memory(got, a) for a in arrays)  # a new array, even for one


def test_other_layouts_and_dtypes_are_added_by_numpy():
    n = PARALLEL_MIN_SIZE + 1
    rng = np.random.default_rng(0)
    a = rng.normal(size=2 * n)[::2]  # strided
    b = rng.normal(size=n).astype(np.float32)
    np.testing.assert_array_equal(sum_in_order([a, b]), a + b)
    with pytest.raises(ValueError, match="nothing"):
        sum_in_order([])


@pytest.mark.parametrize("n", [0, 10, PARALLEL_MIN_SIZE + 3])
def test_max_abs(n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=n) * 1e3
    expected = float(np.abs(a).max()) if n else 0.0
    assert max_abs(a) == expected
    if n:
        a[n // 2] = -1e9  # a negative extreme counts by its size
        assert max_abs(a) == 1e9
        a[n // 3] = np.nan
        assert np.isnan(max_abs(a))


@pytest.mark.parametrize("n", [0, 5, PARALLEL_MIN_SIZE + 1])
def test_filled(n):
    got = filled(n, 1.0)
    np.testing.assert_array_equal(got, np.ones(n))
    assert got.dtype == np.float64 and got.flags.writeable


@pytest.mark.parametrize(("dtype", "value"), [(np.float64, 2.5), (np.int32, 0), (np.int64, 7)])
def test_fill_in_place(dtype, value):
    out = np.empty(1000, dtype=dtype)
    fill_in_place(out, value)
    np.testing.assert_array_equal(out, np.full(1000, value, dtype=dtype))
    assert out.dtype == dtype

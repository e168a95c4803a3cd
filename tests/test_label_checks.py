"""A logistic label column is cast and checked in one compiled pass: the same floats
and the same errors as the general check, for every numeric dtype and table size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gdmix.data import schema
from gdmix.data.schema import check_label
from gdmix.errors import DataError

SIZES = [7, schema._PARALLEL_LABEL_ROWS + 5]  # serial and on all threads


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["int64", "int8", "uint8", "bool", "float32", "float64"])
def test_binary_labels_come_back_as_float64(n, dtype):
    rng = np.random.default_rng(n)
    labels = rng.integers(0, 2, size=n)
    frame = pd.DataFrame({"y": labels.astype(dtype)})
    got = check_label(frame, "y", "t")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, labels.astype(np.float64))
    if dtype == "float64":  # read in place
        assert np.shares_memory(got, frame["y"].to_numpy())


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("dtype", "bad", "message"), [
    ("int64", 2, r"must hold 0/1 values. Got \[2.0\]"),
    ("int8", -1, r"must hold 0/1 values. Got \[-1.0\]"),
    ("float64", 0.5, r"must hold 0/1 values. Got \[0.5\]"),
    ("float32", np.nan, r"NaN/inf value\(s\)"),
    ("float64", np.inf, r"NaN/inf value\(s\)"),
])  # fmt: skip
def test_anything_else_is_reported_as_before(n, dtype, bad, message):
    labels = (np.arange(n) % 2).astype(dtype)
    labels[n // 2] = bad
    with pytest.raises(DataError, match=message):
        check_label(pd.DataFrame({"y": labels}), "y", "t")


def test_other_tasks_and_dtypes_take_the_general_path():
    frame = pd.DataFrame({"y": pd.array([0, 1, None], dtype="Int64")})
    with pytest.raises(DataError, match="NaN"):
        check_label(frame, "y", "t")
    counts = pd.DataFrame({"y": np.array([0, 3, 7])})
    np.testing.assert_array_equal(check_label(counts, "y", "t", "poisson"), [0.0, 3.0, 7.0])
    with pytest.raises(DataError, match="must be numeric"):
        check_label(pd.DataFrame({"y": ["a", "b"]}), "y", "t")

"""The Parquet coefficient table lists each entity's stored entries: every entry of a
dense block, else the non-zero ones (and those with a variance other than the default)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gdmix.effects.random_table import RandomEffectArrays, coefficient_table


def _reference(coef, variance=None, default=None):
    """Per entity: (indices, values, variances) kept, by a plain loop."""
    out = []
    for i in range(coef.shape[0]):
        keep = [j for j in range(coef.shape[1]) if coef[i, j] != 0
                or (variance is not None and variance[i, j] != default)]  # fmt: skip
        out.append((keep, [coef[i, j] for j in keep],
                    None if variance is None else [variance[i, j] for j in keep]))  # fmt: skip
    return out


@pytest.mark.parametrize("case", ["dense", "zeros", "no_features", "variances"])
def test_entries_listed_per_entity(case):
    rng = np.random.default_rng(0)
    n, d = 6, 0 if case == "no_features" else 4
    coef = rng.normal(size=(n, d))
    variance = default = None
    if case == "zeros":
        coef[1, 2] = coef[3] = 0.0
    if case == "variances":
        coef[2, 1] = 0.0
        default = 0.5
        variance = rng.uniform(1, 2, size=(n, d))
        variance[2, 1] = variance[4, 0] = default  # (2, 1): zero and default: left out
    arrays = RandomEffectArrays(pd.Index(np.arange(n) * 10), np.full(n, 3), rng.normal(size=n),
                                coef, rng.uniform(1, 2, n) if variance is not None else None,
                                variance)  # fmt: skip
    table = coefficient_table(arrays, default_variance=default)
    got = table.to_pydict()
    for i, (idx, vals, vars_) in enumerate(_reference(coef, variance, default)):
        assert got["indices"][i] == idx
        assert got["values"][i] == vals
        if vars_ is not None:
            assert got["variances"][i] == vars_
    assert got["entity_id"] == list(np.arange(n) * 10)
    assert table.column("indices").type.value_type == "int32"

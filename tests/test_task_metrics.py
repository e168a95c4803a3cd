"""Metrics of every task against scikit-learn and a direct pandas computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, mean_poisson_deviance, mean_squared_error

from gdmix.errors import DataError
from gdmix.task_metrics import (
    average_precision,
    poisson_deviance,
    precision_at_k,
    rmse,
    task_evaluate,
)


@pytest.mark.parametrize("weighted", [False, True])
def test_average_precision_matches_sklearn(weighted):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.normal(size=2000) + y, 1)  # many ties
    w = rng.uniform(0.1, 3.0, 2000) if weighted else None
    assert average_precision(y, s, w) == pytest.approx(
        average_precision_score(y, s, sample_weight=w), abs=1e-12
    )


def test_rmse_and_poisson_deviance_match_sklearn():
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 0.7, 3000)
    y = rng.poisson(np.exp(z)).astype(float)
    w = rng.uniform(0.5, 2.0, 3000)
    assert rmse(y, np.exp(z), w) == pytest.approx(
        np.sqrt(mean_squared_error(y, np.exp(z), sample_weight=w)), rel=1e-12
    )
    assert poisson_deviance(y, z, w) == pytest.approx(
        mean_poisson_deviance(y, np.exp(z), sample_weight=w), rel=1e-10
    )
    with pytest.raises(DataError, match="counts"):
        poisson_deviance(-y - 1, z)


def test_precision_at_k_matches_a_groupby():
    rng = np.random.default_rng(2)
    n = 5000
    frame = pd.DataFrame({"g": rng.integers(0, 300, n), "y": rng.integers(0, 2, n),
                          "s": rng.normal(size=n)})  # fmt: skip
    top = frame.sort_values("s", ascending=False, kind="stable").groupby("g").head(5)
    expected = top.groupby("g")["y"].mean().mean()
    assert precision_at_k(frame["y"], frame["s"], frame["g"], k=5) == pytest.approx(expected)


def test_task_evaluate_keys():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    z = rng.normal(size=500)
    out = task_evaluate("logistic", y, z, groups={"user": rng.integers(0, 20, 500)}, k=3)
    assert {"auc", "log_loss", "aupr", "rmse", "auc@user", "precision@3@user"} <= set(out)
    assert set(task_evaluate("linear", y, z)) == {"rmse", "n_rows"}
    assert set(task_evaluate("poisson", y, z)) == {"poisson_deviance", "rmse", "n_rows"}

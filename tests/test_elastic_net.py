"""Elastic net on the fixed effect (``l1``, OWL-QN) against scikit-learn's ElasticNet and
an independent bound-constrained scipy formulation (w = w+ - w-, w+/- >= 0)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.sparse as sp
from sklearn.linear_model import ElasticNet

import gdmix
from gdmix.config import parse_config
from gdmix.errors import ConfigError
from gdmix.solvers.lbfgs import InMemoryLogistic, minimize_logistic


def _data(seed: int, n: int = 2000, p: int = 8):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 3.0, p)
    w = np.r_[rng.normal(0.0, 0.5, 3), np.zeros(p - 3)]  # five useless columns
    o = rng.normal(0.0, 0.2, n)
    return X, w, o, rng


@pytest.mark.parametrize("sparse", [False, True])
def test_linear_elastic_net_equals_sklearn(sparse):
    X, w, o, rng = _data(0)
    y = X @ w + 0.4 + o + rng.normal(size=len(o))
    l1, l2 = 60.0, 20.0
    design = sp.csr_matrix(X) if sparse else X
    res = minimize_logistic(InMemoryLogistic(design, y, None, o, task="linear"), l2=l2, l1=l1,
                            tol=1e-12, objective_tol=0.0, max_iter=5000)  # fmt: skip
    n = len(y)  # ElasticNet: 1/(2n)|r|^2 + a r |w|_1 + a (1 - r)/2 |w|^2
    ref = ElasticNet(alpha=(l1 + l2) / n, l1_ratio=l1 / (l1 + l2), tol=1e-14, max_iter=100000)
    ref.fit(X, y - o)
    np.testing.assert_allclose(res.coef, ref.coef_, atol=1e-6)
    assert res.intercept == pytest.approx(ref.intercept_, abs=1e-6)
    assert res.solver == "owlqn"
    assert np.array_equal(res.coef == 0.0, ref.coef_ == 0.0)
    assert (res.coef == 0.0).sum() >= 3  # the penalty removes useless columns


def _split_reference(X, y, s, o, l1, l2):
    """min sum s loss + l2/2 |w|^2 + l1 sum(w+ + w-) over w+, w- >= 0 and a free b."""
    p = X.shape[1]

    def f(t):
        wp, wm, b = t[:p], t[p : 2 * p], t[-1]
        w = wp - wm
        z = X @ w + b + o
        loss = s @ (np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w + l1 * (wp + wm).sum()
        r = s * (0.5 * (1.0 + np.tanh(0.5 * z)) - y)
        gw = X.T @ r + l2 * w
        return loss, np.r_[gw + l1, -gw + l1, r.sum()]

    bounds = [(0, None)] * (2 * p) + [(None, None)]
    res = scipy.optimize.minimize(f, np.zeros(2 * p + 1), jac=True, method="L-BFGS-B",
                                  bounds=bounds, options={"gtol": 1e-12, "ftol": 1e-15,
                                                          "maxiter": 20000})  # fmt: skip
    return res.x[:p] - res.x[p : 2 * p], res.x[-1]


def test_logistic_elastic_net_equals_a_bound_constrained_solve():
    X, w, o, rng = _data(1)
    z = X @ w - 0.3 + o
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-z))).astype(float)
    s = rng.uniform(0.5, 2.0, len(y))
    l1, l2 = 15.0, 1.0
    res = minimize_logistic(InMemoryLogistic(X, y, s, o), l2=l2, l1=l1, tol=1e-10,
                            objective_tol=0.0, max_iter=5000)  # fmt: skip
    coef, intercept = _split_reference(X, y, s, o, l1, l2)
    np.testing.assert_allclose(res.coef, coef, atol=1e-5)
    assert res.intercept == pytest.approx(intercept, abs=1e-5)
    assert res.converged
    assert np.array_equal(res.coef == 0.0, np.abs(coef) < 1e-7)


def test_l1_through_fit_and_a_bad_value():
    X, w, _, rng = _data(2, n=1500, p=5)
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(5)])
    frame["y"] = (rng.random(len(frame)) < 1 / (1 + np.exp(-(X @ w)))).astype(int)
    raw = {"data": {"label": "y"}, "training": {"progress": False},
           "coordinates": [{"name": "g", "type": "fixed", "l1": 40.0, "l2": 0.0,
                            "features": {"numeric": list(frame.columns[:5])}}]}  # fmt: skip
    model = gdmix.fit(parse_config(raw), frame)
    assert model.history[0]["solver"] == "owlqn"
    assert (model["g"].coef == 0.0).any()
    coef, _ = _split_reference(X, frame["y"].to_numpy(float), np.ones(len(frame)),
                                       np.zeros(len(frame)), 40.0, 0.0)  # fmt: skip
    np.testing.assert_allclose(model["g"].coef, coef, atol=1e-5)
    with pytest.raises(ConfigError, match="l1"):
        parse_config({**raw, "coordinates": [{**raw["coordinates"][0], "l1": -1.0}]})

"""Linear (squared loss) and Poisson (log link) regressions: the fixed-effect optimiser
and the per-entity solver against scikit-learn, statsmodels and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
import statsmodels.api as sm
from sklearn.linear_model import PoissonRegressor, Ridge

from gdmix.solvers.lbfgs import InMemoryLogistic, minimize_logistic
from gdmix.solvers.newton import solve_entities


def _data(seed: int, n: int = 3000, p: int = 6, task: str = "linear"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    w = rng.normal(0.0, 0.4, p)
    o = rng.normal(0.0, 0.3, n)
    z = X @ w + 0.5 + o
    y = z + rng.normal(size=n) if task == "linear" else rng.poisson(np.exp(z)).astype(float)
    s = rng.uniform(0.5, 2.0, n)
    return X, y, s, o


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("solver", ["newton", "tron", "lbfgs"])
def test_linear_fixed_effect_equals_ridge(sparse, solver):
    X, y, s, o = _data(0)
    l2 = 5.0
    design = sp.csr_matrix(X) if sparse else X
    res = minimize_logistic(InMemoryLogistic(design, y, s, o, task="linear"), l2=l2,
                            solver=solver, tol=1e-12)  # fmt: skip
    # 1/2 sum s (y - o - z)^2 + l2/2 |w|^2  ==  Ridge's  sum s r^2 + alpha |w|^2, / 2
    ref = Ridge(alpha=l2).fit(X, y - o, sample_weight=s)
    np.testing.assert_allclose(res.coef, ref.coef_, atol=1e-8)
    assert res.intercept == pytest.approx(ref.intercept_, abs=1e-8)


def test_poisson_fixed_effect_equals_sklearn_and_statsmodels():
    X, y, s, _ = _data(1, task="poisson")
    l2 = 3.0
    res = minimize_logistic(InMemoryLogistic(X, y, s, task="poisson"), l2=l2, tol=1e-12)
    # scikit-learn: 1/(2 sum s) sum s deviance + alpha/2 |w|^2, i.e. ours / sum s
    ref = PoissonRegressor(alpha=l2 / s.sum(), tol=1e-12, max_iter=1000).fit(X, y, sample_weight=s)
    np.testing.assert_allclose(res.coef, ref.coef_, atol=1e-6)
    assert res.intercept == pytest.approx(ref.intercept_, abs=1e-6)
    # with an offset and no penalty: statsmodels' GLM (IRLS) with frequency weights
    Xo, yo, so, oo = _data(2, task="poisson")
    free = minimize_logistic(InMemoryLogistic(Xo, yo, so, oo, task="poisson"), l2=0.0, tol=1e-12)
    glm = sm.GLM(yo, sm.add_constant(Xo), family=sm.families.Poisson(), offset=oo,
                 freq_weights=so).fit(tol=1e-12)  # fmt: skip
    np.testing.assert_allclose(free.coef, glm.params[1:], atol=1e-7)
    assert free.intercept == pytest.approx(glm.params[0], abs=1e-7)


def _entities(seed: int, task: str, n_entities: int = 120, d: int = 3):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 30, n_entities)
    codes = rng.permutation(np.repeat(np.arange(n_entities), sizes)).astype(np.int64)
    n = len(codes)
    X = rng.normal(size=(n, d))
    w = rng.normal(0.0, 0.5, (n_entities, d))
    b = rng.normal(0.0, 0.5, n_entities)
    o = rng.normal(0.0, 0.3, n)
    z = np.einsum("ij,ij->i", X, w[codes]) + b[codes] + o
    y = z + rng.normal(size=n) if task == "linear" else rng.poisson(np.exp(z)).astype(float)
    s = rng.uniform(0.5, 2.0, n)
    perm = np.argsort(codes, kind="stable").astype(np.int64)
    starts = np.r_[0, np.cumsum(np.bincount(codes, minlength=n_entities))].astype(np.int64)
    return X, codes, y, s, o, perm, starts


@pytest.mark.parametrize("task", ["linear", "poisson"])
def test_per_entity_solves_match_closed_form_and_scipy(task):
    X, codes, y, s, o, perm, starts = _entities(3, task)
    n_entities, d = len(starts) - 1, X.shape[1]
    l2, l2_b = 2.0, 0.5
    coef, icpt = np.zeros((n_entities, d)), np.zeros(n_entities)
    stats = solve_entities(X, perm, starts, y, s, o, np.arange(n_entities), coef, icpt,
                           l2=l2, intercept_l2=l2_b, tol=1e-12, task=task)  # fmt: skip
    assert stats.n_converged == n_entities
    pen = np.r_[np.full(d, l2), l2_b]
    for e in range(0, n_entities, 7):
        rows = codes == e
        A = np.c_[X[rows], np.ones(rows.sum())]
        if task == "linear":  # weighted ridge in closed form
            ref = np.linalg.solve(A.T @ (s[rows, None] * A) + np.diag(pen),
                                  A.T @ (s[rows] * (y[rows] - o[rows])))  # fmt: skip
        else:

            def f(t, A=A, rows=rows):
                z = A @ t + o[rows]
                mu = np.exp(z)
                val = s[rows] @ (mu - y[rows] * z) + 0.5 * t @ (pen * t)
                return val, A.T @ (s[rows] * (mu - y[rows])) + pen * t

            ref = scipy.optimize.minimize(f, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                                          options={"gtol": 1e-12, "ftol": 1e-15}).x  # fmt: skip
        np.testing.assert_allclose(np.r_[coef[e], icpt[e]], ref, atol=1e-6)

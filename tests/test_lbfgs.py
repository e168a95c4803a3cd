"""Tests of gdmix.solvers.lbfgs against scikit-learn, statsmodels and exact identities,
for each of its methods (Newton, trust-region Newton-CG, L-BFGS)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import statsmodels.api as sm
from sklearn.linear_model import LogisticRegression

from gdmix.solvers.lbfgs import fit_logistic_lbfgs, logistic_objective


def _data(seed, n=400, p=6, *, sparse=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.2, 3.0, size=p) + rng.normal(size=p)
    if sparse:
        X = X * (rng.uniform(size=(n, p)) < 0.3)
    w_true = rng.normal(size=p) * 0.5
    z = X @ w_true - 0.3
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return (sp.csr_matrix(X) if sparse else X), y, rng


def _objective_np(X, y, coef, intercept, l2, s=None, o=None):
    """F(w, b) = sum s_i * log(1 + exp(-t_i z_i)) + l2 / 2 ||w||^2, t in {-1, +1}."""
    Xd = X.toarray() if sp.issparse(X) else X
    z = Xd @ coef + intercept + (0.0 if o is None else o)
    t = 2.0 * y - 1.0
    loss = np.log1p(np.exp(-np.abs(t * z))) + np.maximum(-t * z, 0.0)
    s = np.ones(len(y)) if s is None else s
    return float(s @ loss + 0.5 * l2 * coef @ coef)


def _sklearn(X, y, l2, *, s=None, fit_intercept=True):
    model = LogisticRegression(C=1.0 / l2, tol=1e-12, max_iter=10000, fit_intercept=fit_intercept)
    model.fit(X, y, sample_weight=s)
    return model.coef_.ravel(), float(model.intercept_[0]) if fit_intercept else 0.0


SOLVERS = ["auto", "newton", "tron", "lbfgs"]


def _tight(solver):
    """L-BFGS's objective test stops on one iteration's decrease, which leaves the
    coefficients ~1e-6 off on these small problems (the objective is then 1e-12 off):
    for coefficient comparisons, its gradient test decides (at a tolerance above the
    rounding floor of the line search)."""
    return {"objective_tol": 0.0, "tol": 1e-8} if solver == "lbfgs" else {}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("l2", [0.1, 2.0])
def test_matches_sklearn(sparse, weighted, l2, solver):
    X, y, rng = _data(1 + int(sparse) + 2 * int(weighted), sparse=sparse)
    s = rng.uniform(0.1, 3.0, size=len(y)) if weighted else None
    coef_ref, b_ref = _sklearn(X, y, l2, s=s)
    res = fit_logistic_lbfgs(X, y, l2=l2, sample_weight=s, solver=solver, **_tight(solver))
    assert res.converged, res.message
    np.testing.assert_allclose(res.coef, coef_ref, atol=1e-6, rtol=0)
    assert res.intercept == pytest.approx(b_ref, abs=1e-6)
    # Both solutions minimise the same objective: values agree to high relative precision.
    f_ref = _objective_np(X, y, coef_ref, b_ref, l2, s)
    assert res.objective == pytest.approx(f_ref, rel=1e-10)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("sparse", [False, True])
def test_matches_sklearn_without_intercept(sparse, solver):
    X, y, _ = _data(7, sparse=sparse)
    coef_ref, _ = _sklearn(X, y, 0.5, fit_intercept=False)
    res = fit_logistic_lbfgs(X, y, l2=0.5, fit_intercept=False, solver=solver, **_tight(solver))
    assert res.converged, res.message
    assert res.intercept == 0.0
    np.testing.assert_allclose(res.coef, coef_ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_offset_matches_statsmodels_glm(solver):
    X, y, rng = _data(11, n=600, p=4)
    o = rng.normal(size=len(y)) * 0.8
    glm = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial(), offset=o)
    params = glm.fit(tol=1e-14, maxiter=200).params
    res = fit_logistic_lbfgs(
        X, y, l2=0.0, offset=o, solver=solver, **{"tol": 1e-12, **_tight(solver)}
    )
    assert res.converged, res.message
    assert res.intercept == pytest.approx(params[0], abs=1e-6)
    np.testing.assert_allclose(res.coef, params[1:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("sparse", [False, True])
def test_integer_weights_equal_duplicated_rows(sparse):
    X, y, rng = _data(3, n=200, sparse=sparse)
    counts = rng.integers(1, 5, size=len(y))
    o = rng.normal(size=len(y)) * 0.3
    idx = np.repeat(np.arange(len(y)), counts)
    weighted = fit_logistic_lbfgs(
        X, y, l2=1.0, sample_weight=counts.astype(float), offset=o, tol=1e-12
    )
    duplicated = fit_logistic_lbfgs(X[idx], y[idx], l2=1.0, offset=o[idx], tol=1e-12)
    np.testing.assert_allclose(weighted.coef, duplicated.coef, atol=1e-7, rtol=0)
    assert weighted.intercept == pytest.approx(duplicated.intercept, abs=1e-7)
    assert weighted.objective == pytest.approx(duplicated.objective, rel=1e-10)


@pytest.mark.parametrize("sparse", [False, True])
def test_constant_offset_shifts_only_intercept(sparse):
    X, y, _ = _data(5, sparse=sparse)
    c = 1.7
    base = fit_logistic_lbfgs(X, y, l2=0.3, tol=1e-12)
    shifted = fit_logistic_lbfgs(X, y, l2=0.3, offset=np.full(len(y), c), tol=1e-12)
    np.testing.assert_allclose(shifted.coef, base.coef, atol=1e-6, rtol=0)
    assert shifted.intercept == pytest.approx(base.intercept - c, abs=1e-6)
    assert shifted.objective == pytest.approx(base.objective, rel=1e-10)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_warm_start_from_solution(fit_intercept, solver):
    X, y, rng = _data(9, sparse=True)
    s = rng.uniform(0.5, 2.0, size=len(y))
    o = rng.normal(size=len(y)) * 0.2
    kw = dict(l2=0.7, sample_weight=s, offset=o, fit_intercept=fit_intercept, solver=solver)
    cold = fit_logistic_lbfgs(X, y, **kw)
    assert cold.n_iter >= 3
    warm = fit_logistic_lbfgs(X, y, coef0=cold.coef, intercept0=cold.intercept, **kw)
    assert warm.converged, warm.message
    assert warm.n_iter <= 2
    assert warm.objective == pytest.approx(cold.objective, rel=1e-12)
    np.testing.assert_allclose(warm.coef, cold.coef, atol=1e-6, rtol=0)
    assert warm.intercept == pytest.approx(cold.intercept, abs=1e-6)


def test_objective_value_at_solution():
    X, y, rng = _data(13, sparse=True)
    s = rng.uniform(0.2, 2.0, size=len(y))
    o = rng.normal(size=len(y)) * 0.5
    l2 = 0.8
    res = fit_logistic_lbfgs(X, y, l2=l2, sample_weight=s, offset=o)
    expected = _objective_np(X, y, res.coef, res.intercept, l2, s, o)
    got = logistic_objective(X, y, res.coef, res.intercept, l2=l2, sample_weight=s, offset=o)
    assert got == pytest.approx(expected, rel=1e-12)
    assert res.objective == pytest.approx(expected, rel=1e-12)
    # Without an offset the solution is sklearn's, and so is the objective value.
    coef_ref, b_ref = _sklearn(X, y, l2, s=s)
    res0 = fit_logistic_lbfgs(X, y, l2=l2, sample_weight=s)
    f_sk = _objective_np(X, y, coef_ref, b_ref, l2, s)
    assert logistic_objective(
        X, y, res0.coef, res0.intercept, l2=l2, sample_weight=s
    ) == pytest.approx(f_sk, rel=1e-10)
    # The solver's own objective is no larger than any perturbed point's.
    bumped = logistic_objective(X, y, res0.coef + 1e-3, res0.intercept, l2=l2, sample_weight=s)
    assert bumped > res0.objective

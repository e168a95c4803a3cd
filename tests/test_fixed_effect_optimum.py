"""The linear fixed effect reaches its optimum: hard designs against tight independent solves.

References are computed here, in the test, by software that shares no code with gdmix:
scipy's L-BFGS-B on the plain (unscaled) objective, run far past gdmix's tolerances, and
scikit-learn's Newton solvers at ``tol=1e-12``. gdmix must land within 1e-9 (relative) of
the better of them, on the designs that used to stop early:

- a design with one-hot blocks collinear with the intercept (rare levels, levels that
  never occur, a near-constant numeric column) and a tiny ``l2``;
- a wide sparse TF-IDF design (Zipf vocabulary, L2-normalised rows).
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

import gdmix
from gdmix.config import parse_config
from gdmix.errors import ConfigError
from gdmix.solvers import fixed_kernels as fk
from gdmix.solvers.lbfgs import InMemoryLogistic, fit_logistic_lbfgs, logistic_objective

# -- designs ---------------------------------------------------------------------------


def one_hot_design(n: int = 20_000, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """One-hot blocks (each row has one level per block, so every block sums to the
    intercept column), rare levels with 3 rows, two levels that never occur, and a
    near-constant numeric column (a year divided by 2000)."""
    rng = np.random.default_rng(seed)
    blocks, effect = [], np.zeros(n)
    for levels, rare, absent in ((21, 2, 2), (7, 0, 0), (30, 3, 0)):
        prob = 1.0 / np.arange(1, levels + 1) ** 0.8
        prob[levels - absent :] = 0.0
        prob /= prob.sum()
        codes = rng.choice(levels, size=n, p=prob)
        for r in range(rare):
            level = levels - absent - 1 - r
            codes[codes == level] = 0
            codes[rng.choice(n, 3, replace=False)] = level
        blocks.append(sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, levels)))
        effect += rng.normal(0.0, 0.5, levels)[codes]
    year = (1990 + rng.integers(0, 10, n)) / 2000.0
    X = sp.hstack([*blocks, sp.csr_matrix(year[:, None])], format="csr")
    z = effect + 3.0 * (year - year.mean()) - 0.3
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return X, y


def tfidf_design(
    n: int = 3000, vocabulary: int = 8000, seed: int = 0
) -> tuple[sp.csr_matrix, np.ndarray]:
    """TF-IDF rows (log term frequency times smoothed IDF, L2-normalised) over a Zipf
    vocabulary; labels from a few hundred informative words."""
    rng = np.random.default_rng(seed)
    lengths = rng.poisson(60, n) + 1
    prob = 1.0 / np.arange(1, vocabulary + 1) ** 1.07
    words = rng.choice(vocabulary, size=lengths.sum(), p=prob / prob.sum())
    rows = np.repeat(np.arange(n), lengths)
    counts = sp.csr_matrix((np.ones(len(words)), (rows, words)), shape=(n, vocabulary))
    counts.sum_duplicates()
    df = np.bincount(counts.indices, minlength=vocabulary)
    counts = counts[:, np.flatnonzero(df > 0)].tocsr()
    df = df[df > 0]
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    counts.data = np.log1p(counts.data) * idf[counts.indices]
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
    X = sp.csr_matrix(sp.diags(1.0 / norms) @ counts)
    X.sort_indices()
    w = np.zeros(X.shape[1])
    informative = rng.choice(X.shape[1], 300, replace=False)
    w[informative] = rng.normal(0.0, 4.0, 300)
    z = X @ w
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-(z - np.median(z))))).astype(np.float64)
    return X, y


# -- independent references ------------------------------------------------------------


def scipy_reference(X, y, l2, s=None) -> float:
    """Plain scipy L-BFGS-B on F(w, b), unscaled, far past gdmix's tolerances."""
    s = np.ones(len(y)) if s is None else s
    Xt = X.T.tocsr() if sp.issparse(X) else X.T

    def fun(theta):
        w, b = theta[:-1], theta[-1]
        z = X @ w + b
        p = 1.0 / (1.0 + np.exp(-z))
        value = s @ (np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w
        r = s * (p - y)
        return value, np.append(Xt @ r + l2 * w, r.sum())

    res = scipy.optimize.minimize(
        fun,
        np.zeros(X.shape[1] + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 50_000, "maxfun": 100_000, "gtol": 1e-11, "ftol": 0.0, "maxcor": 50},
    )
    return logistic_objective(X, y, res.x[:-1], res.x[-1], l2=l2, sample_weight=s)


def sklearn_reference(X, y, l2, solver, s=None) -> float:
    model = LogisticRegression(C=1.0 / l2, solver=solver, tol=1e-12, max_iter=10_000)
    model.fit(X, y, sample_weight=s)
    coef, b = model.coef_.ravel(), float(model.intercept_[0])
    return logistic_objective(X, y, coef, b, l2=l2, sample_weight=s)


def rel_gap(value: float, best: float) -> float:
    return (value - best) / abs(best)


@pytest.fixture(scope="module")
def one_hot():
    X, y = one_hot_design()
    s = np.random.default_rng(5).uniform(0.5, 2.0, size=len(y))
    l2 = 1e-3
    refs = [scipy_reference(X, y, l2, s), sklearn_reference(X, y, l2, "newton-cholesky", s)]
    return X, y, s, l2, min(refs), refs


@pytest.fixture(scope="module")
def tfidf():
    X, y = tfidf_design()
    l2 = 0.3
    refs = [scipy_reference(X, y, l2), sklearn_reference(X, y, l2, "newton-cg")]
    return X, y, l2, min(refs), refs


# -- the optimum -----------------------------------------------------------------------


def test_references_agree(one_hot, tfidf):
    """The two independent references are themselves converged (they agree)."""
    for refs in (one_hot[5], tfidf[4]):
        assert abs(rel_gap(refs[0], refs[1])) <= 1e-10


@pytest.mark.parametrize("solver", ["auto", "newton", "tron"])
def test_collinear_one_hot_reaches_the_optimum(one_hot, solver):
    X, y, s, l2, best, _ = one_hot
    assert (np.asarray(X.sum(axis=0)).ravel() == 0).sum() == 2  # levels that never occur
    res = fit_logistic_lbfgs(X, y, l2=l2, sample_weight=s, solver=solver)
    assert res.converged and res.stop in ("tol", "objective_tol"), res.message
    assert abs(rel_gap(res.objective, best)) <= 1e-9
    # The reported objective is the objective at the returned coefficients.
    direct = logistic_objective(X, y, res.coef, res.intercept, l2=l2, sample_weight=s)
    assert res.objective == pytest.approx(direct, rel=1e-12)
    # A level that never occurs has no data: the penalty holds it at exactly zero.
    absent = np.flatnonzero(np.asarray(X.sum(axis=0)).ravel() == 0)
    np.testing.assert_allclose(res.coef[absent], 0.0, atol=1e-12)


def test_auto_picks_newton_for_a_cheap_narrow_design(one_hot):
    X, y, s, l2, _, _ = one_hot
    assert fit_logistic_lbfgs(X, y, l2=l2, sample_weight=s).solver == "newton"


@pytest.mark.parametrize("solver", ["auto", "tron", "lbfgs"])
def test_wide_sparse_tfidf_reaches_the_optimum(tfidf, solver):
    X, y, l2, best, _ = tfidf
    res = fit_logistic_lbfgs(X, y, l2=l2, solver=solver)
    assert res.converged and res.stop in ("tol", "objective_tol"), res.message
    assert res.solver == ("tron" if solver == "auto" else solver)
    assert abs(rel_gap(res.objective, best)) <= 1e-9


@pytest.mark.parametrize("objective_tol", [1e-12, 0.0])
def test_lbfgs_reaches_the_collinear_optimum(one_hot, objective_tol):
    """L-BFGS's objective test looks at one iteration's decrease only; with it off
    (0: only an iteration that decreases nothing stops it), the gradient test decides."""
    X, y, s, l2, best, _ = one_hot
    res = fit_logistic_lbfgs(
        X, y, l2=l2, sample_weight=s, solver="lbfgs", objective_tol=objective_tol, max_iter=5000
    )
    assert res.converged and res.stop in ("tol", "objective_tol"), res.message
    assert abs(rel_gap(res.objective, best)) <= 1e-9


# -- the stopping rules ----------------------------------------------------------------


@pytest.mark.parametrize("solver", ["newton", "tron", "lbfgs"])
def test_tol_moves_the_result(tfidf, solver):
    X, y, l2, _, _ = tfidf
    gaps, iters = [], []
    for tol in (1e-2, 1e-4, 1e-7):
        res = fit_logistic_lbfgs(
            X[:, :200], y, l2=l2, solver=solver, tol=tol, objective_tol=0.0, max_iter=5000
        )
        assert res.stop == "tol" and res.converged, res.message
        gaps.append(res.objective)
        iters.append(res.n_iter)
    assert gaps[0] > gaps[1] > gaps[2]
    assert iters[0] < iters[2]


def test_objective_tol_moves_the_result(one_hot):
    X, y, s, l2, best, _ = one_hot
    loose = fit_logistic_lbfgs(X, y, l2=l2, sample_weight=s, tol=0.0, objective_tol=1e-3)
    tight = fit_logistic_lbfgs(X, y, l2=l2, sample_weight=s, tol=0.0, objective_tol=1e-14)
    assert loose.stop == tight.stop == "objective_tol"
    assert rel_gap(loose.objective, best) > 1e-9 >= abs(rel_gap(tight.objective, best))
    assert loose.n_iter < tight.n_iter


@pytest.mark.parametrize("solver", ["newton", "tron", "lbfgs"])
def test_max_iter_stops_and_says_so(tfidf, solver):
    X, y, l2, _, _ = tfidf
    res = fit_logistic_lbfgs(X[:, :200], y, l2=l2, solver=solver, max_iter=1)
    assert res.stop == "max_iter" and not res.converged
    assert res.n_iter == 1


# -- no optimum: runaway coefficients are not "converged" ------------------------------


@pytest.mark.parametrize("solver", ["auto", "newton", "tron", "lbfgs"])
def test_separable_data_without_penalty_is_not_converged(solver):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    y = (X @ [1.0, -2.0, 0.5] > 0.2).astype(np.float64)
    res = fit_logistic_lbfgs(X, y, l2=0.0, solver=solver)
    assert res.stop == "diverged" and not res.converged, res.message


@pytest.mark.parametrize("solver", ["newton", "tron", "lbfgs"])
def test_quasi_separated_level_without_penalty_is_not_converged(solver):
    """One one-hot level whose rows are all positive: its coefficient runs off alone."""
    rng = np.random.default_rng(1)
    n = 2000
    x = rng.normal(size=n)
    level = np.zeros(n)
    level[:40] = 1.0
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-x))).astype(np.float64)
    y[:40] = 1.0
    X = np.column_stack([x, level])
    res = fit_logistic_lbfgs(X, y, l2=0.0, solver=solver)
    assert res.stop == "diverged" and not res.converged, res.message
    # With a penalty the optimum exists, and the fit converges.
    assert fit_logistic_lbfgs(X, y, l2=1e-3, solver=solver).converged


def test_one_label_only_runs_the_intercept_off():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 2))
    res = fit_logistic_lbfgs(X, np.ones(300), l2=1.0)
    assert res.stop == "diverged" and not res.converged


@pytest.mark.parametrize("solver", ["newton", "tron"])
def test_unpenalised_maximum_likelihood_converges(solver):
    """l2 = 0 on data that are not separable: a finite optimum, reported as converged."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 4))
    z = X @ [1.0, -0.5, 0.25, 0.0] + 0.3
    y = (rng.uniform(size=3000) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    res = fit_logistic_lbfgs(X, y, l2=0.0, solver=solver)
    assert res.converged, res.message
    best = scipy_reference(X, y, 0.0)
    assert abs(rel_gap(res.objective, best)) <= 1e-12


# -- warm starts along an l2 path ------------------------------------------------------


@pytest.mark.parametrize("solver", ["newton", "tron"])
def test_warm_starts_along_an_l2_path_reuse_the_previous_solution(tfidf, one_hot, solver):
    X, y = (tfidf[0], tfidf[1]) if solver == "tron" else (one_hot[0], one_hot[1])
    cold_iters = warm_iters = 0
    coef, intercept = None, 0.0
    for l2 in [10.0, 3.0, 1.0, 0.3, 0.1]:
        cold = fit_logistic_lbfgs(X, y, l2=l2, solver=solver)
        warm = fit_logistic_lbfgs(X, y, l2=l2, solver=solver, coef0=coef, intercept0=intercept)
        assert warm.converged and cold.converged
        assert abs(rel_gap(warm.objective, cold.objective)) <= 1e-11
        if coef is not None:
            cold_iters += cold.n_iter
            warm_iters += warm.n_iter
        coef, intercept = warm.coef, warm.intercept
    assert warm_iters < cold_iters


def test_l2_search_in_training_is_warm_started():
    rng = np.random.default_rng(4)
    n = 4000
    frame = pd.DataFrame(
        {"x1": rng.normal(size=n), "x2": rng.normal(size=n), "c": rng.choice(list("abcde"), n)}
    )
    z = (
        frame["x1"]
        - 0.5 * frame["x2"]
        + frame["c"].map(dict(zip("abcde", range(5), strict=True))) * 0.2
    )
    frame["label"] = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    cfg = parse_config(
        {
            "coordinates": [
                {
                    "name": "g",
                    "type": "fixed",
                    "l2": [100.0, 10.0, 1.0],
                    "features": {"numeric": ["x1", "x2"], "categorical": ["c"]},
                }
            ],
            "training": {"progress": False, "n_passes": 2, "early_stopping": False},
        }
    )
    model = gdmix.fit(cfg, frame.iloc[:3000], frame.iloc[3000:])
    records = [r for r in model.history if r["coordinate"] == "g"]
    assert [(r["pass"], r["params"]["l2"]) for r in records] == [
        (p, l2) for p in (1, 2) for l2 in (100.0, 10.0, 1.0)
    ]
    for r in records:
        assert r["converged"] and r["stop"] in ("tol", "objective_tol") and r["solver"]
    # Along the path each candidate starts from the previous one's solution; in the next
    # pass (same offsets: one coordinate) each starts from its own solution: no step left.
    first = [r["n_iter"] for r in records[:3]]
    assert max(first[1:]) <= first[0]
    assert all(r["n_iter"] == 0 for r in records[3:])


# -- designs, threads, kernels ---------------------------------------------------------


@pytest.mark.parametrize("design", ["tfidf", "one_hot", "dense"])
def test_same_solution_for_any_number_of_threads(tfidf, one_hot, design, monkeypatch):
    monkeypatch.setattr(fk, "PARALLEL_MIN_WORK", 0)  # parallel passes even when small
    X, y = {"tfidf": tfidf[:2], "one_hot": one_hot[:2]}.get(design, (None, None))
    if design == "dense":
        X, y = one_hot[0].toarray(), one_hot[1]
    assert fk.prepare(X).parallel
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fit_logistic_lbfgs(X, y, l2=0.3)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = fit_logistic_lbfgs(X, y, l2=0.3)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(one.coef, many.coef)
    assert one.intercept == many.intercept


def test_dense_and_sparse_designs_give_the_same_solution():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(30_000, 12)) * rng.uniform(0.1, 3.0, 12) + rng.normal(size=12)
    z = X @ rng.normal(0, 0.3, 12)
    y = (rng.uniform(size=len(z)) < 1.0 / (1.0 + np.exp(-(z - z.mean())))).astype(np.float64)
    s = rng.uniform(0.5, 2.0, size=len(y))
    o = rng.normal(0.0, 0.2, size=len(y))
    ref = fit_logistic_lbfgs(X, y, l2=2.0, sample_weight=s, offset=o)
    tight = {"tol": 1e-13, "objective_tol": 0.0}
    layouts = (X, np.asfortranarray(X), sp.csr_matrix(X))
    for solver in ("newton", "tron"):
        for M in layouts:
            res = fit_logistic_lbfgs(
                M, y, l2=2.0, sample_weight=s, offset=o, solver=solver, **tight
            )
            # The objective is flat to rounding within ~1e-8 of the optimum's coefficients;
            # layouts and methods add up in different orders.
            np.testing.assert_allclose(res.coef, ref.coef, rtol=0, atol=1e-7)
            assert res.intercept == pytest.approx(ref.intercept, abs=1e-7)
            assert res.objective == pytest.approx(ref.objective, rel=1e-13)
    # float32 designs are used as they are: the solution of the rounded data.
    x32 = X.astype(np.float32)
    ref32 = fit_logistic_lbfgs(
        x32.astype(np.float64), y, l2=2.0, sample_weight=s, offset=o, **tight
    )
    for M in (x32, sp.csr_matrix(x32)):
        assert fk.prepare(M).X.dtype == np.float32
        res32 = fit_logistic_lbfgs(M, y, l2=2.0, sample_weight=s, offset=o, **tight)
        np.testing.assert_allclose(res32.coef, ref32.coef, rtol=0, atol=1e-7)


@pytest.mark.parametrize("kind", ["csr", "csr_wide", "dense_c", "dense_f"])
def test_kernels_match_numpy(kind):
    rng = np.random.default_rng(7)
    if kind == "csr_wide":  # wide enough to keep a transposed copy
        n, p = 6000, fk.TRANSPOSE_MIN_FEATURES + 10
        A = sp.random(n, p, density=0.002, format="csr", random_state=7)
        A.data = rng.normal(size=A.nnz)
    else:
        n, p = 20_000, 9
        A = rng.normal(size=(n, p)) * (rng.uniform(size=(n, p)) < 0.4)
    X = {"csr": sp.csr_matrix(A), "dense_f": np.asfortranarray(A)}.get(kind, A)
    assert (fk.prepare(X).Xt is not None) == (kind == "csr_wide")
    A2 = A.multiply(A) if sp.issparse(A) else A * A
    y = (rng.uniform(size=n) < 0.3).astype(np.float64)
    s, o = rng.uniform(0.5, 2.0, n), rng.normal(size=n)
    w, b, v = rng.normal(size=p), 0.4, rng.normal(size=p)
    z = A @ w + b + o
    prob = 1.0 / (1.0 + np.exp(-z))
    d_ref = s * prob * (1.0 - prob)
    loss, xg, gsum, d, diag = fk.value_grad(X, y, s, o, w, b, diag=True)
    assert loss == pytest.approx(s @ (np.logaddexp(0.0, z) - y * z), rel=1e-12)
    np.testing.assert_allclose(xg, A.T @ (s * (prob - y)), rtol=1e-10, atol=1e-9)
    assert gsum == pytest.approx((s * (prob - y)).sum(), rel=1e-10)
    np.testing.assert_allclose(d, d_ref, rtol=1e-9)
    np.testing.assert_allclose(diag[0], A.T @ d_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(diag[1], A2.T @ d_ref, rtol=1e-10, atol=1e-12)
    hv, hsum = fk.hess_vec(X, d, v, 0.7)
    t = d_ref * (A @ v + 0.7)
    np.testing.assert_allclose(hv, A.T @ t, rtol=1e-10, atol=1e-9)
    assert hsum == pytest.approx(t.sum(), rel=1e-10)
    total, xs, xxs = fk.column_moments(X, s)
    np.testing.assert_allclose(xs, A.T @ s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xxs, A2.T @ s, rtol=1e-10, atol=1e-12)
    assert total == pytest.approx(s.sum())
    assert InMemoryLogistic(X, y, s, o).hessian_cost > 0
    if kind != "csr_wide":  # full Hessians are for narrow designs
        H, xd, dsum = fk.hessian(X, d)
        assert dsum == pytest.approx(d_ref.sum(), rel=1e-12)
        np.testing.assert_allclose(H, A.T @ (A * d_ref[:, None]), rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(xd, A.T @ d_ref, rtol=1e-10)
        # The same sums in one pass (CSR) or two (dense).
        loss2, xg2, gsum2, d2, (H2, xd2, dsum2) = fk.value_grad_hessian(X, y, s, o, w, b)
        assert loss2 == pytest.approx(loss, rel=1e-13) and gsum2 == pytest.approx(gsum)
        np.testing.assert_allclose(xg2, xg, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(d2, d, rtol=1e-14)
        np.testing.assert_allclose(H2, H, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(xd2, xd, rtol=1e-12)
        assert dsum2 == pytest.approx(dsum, rel=1e-14)


# -- configuration and history ---------------------------------------------------------


def test_config_keys_and_history_fields():
    rng = np.random.default_rng(8)
    frame = pd.DataFrame({"x": rng.normal(size=500)})
    frame["label"] = (rng.uniform(size=500) < 1.0 / (1.0 + np.exp(-frame["x"]))).astype(int)
    base = {"name": "g", "type": "fixed", "features": {"numeric": ["x"]}}
    for solver in ("auto", "newton", "tron", "lbfgs"):
        cfg = parse_config(
            {
                "coordinates": [{**base, "solver": solver, "tol": 1e-8, "objective_tol": 0}],
                "training": {"progress": False},
            }
        )
        record = gdmix.fit(cfg, frame).history[-1]
        assert record["converged"] is True and record["stop"] == "tol"
        assert record["solver"] == ("newton" if solver == "auto" else solver)
    for bad, key in (({"solver": "sgd"}, "solver"), ({"objective_tol": -1}, "objective_tol")):
        with pytest.raises(ConfigError, match=key):
            parse_config({"coordinates": [{**base, **bad}]})

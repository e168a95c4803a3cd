"""Tests of gdmix.solvers.newton against per-entity scipy L-BFGS-B solves."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp

from gdmix.solvers import newton
from gdmix.solvers.newton import score_entities, solve_entities


@pytest.fixture(params=[False, True], ids=["serial", "threaded"])
def kernel(request, monkeypatch):
    """Run the serial kernel (small jobs) or force the threaded one."""
    monkeypatch.setattr(newton, "_threaded", lambda n_rows: request.param)
    return request.param


def _layout(codes, n_entities):
    perm = np.argsort(codes, kind="stable").astype(np.int64)
    starts = np.zeros(n_entities + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(codes, minlength=n_entities))
    return perm, starts


def _problem(seed, n_entities=300, d=8):
    """Rows of entities of 1..40 rows in shuffled order, ~40% exact zeros in X."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 41, size=n_entities)
    codes = rng.permutation(np.repeat(np.arange(n_entities), sizes)).astype(np.int64)
    n = len(codes)
    X = rng.normal(size=(n, d)) * (rng.uniform(size=(n, d)) < 0.6)
    w_true = rng.normal(size=(n_entities, d))
    b_true = rng.normal(size=n_entities)
    o = rng.normal(size=n) * 0.5
    z = np.einsum("ij,ij->i", X, w_true[codes]) + b_true[codes] + o
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    s = rng.uniform(0.2, 3.0, size=n)
    return X, codes, y, s, o


def _objective(theta, X, y, s, o, l2, l2_b, fit_b):
    """sum s_i loss_i + l2/2 ||w||^2 + l2_b/2 b^2 and its gradient, written independently."""
    d = X.shape[1]
    w = theta[:d]
    b = theta[d] if fit_b else 0.0
    z = X @ w + b + o
    loss = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z))) - y * z
    f = s @ loss + 0.5 * l2 * w @ w + (0.5 * l2_b * b * b if fit_b else 0.0)
    r = s * (0.5 * (1.0 + np.tanh(0.5 * z)) - y)
    g = X.T @ r + l2 * w
    if fit_b:
        g = np.append(g, r.sum() + l2_b * b)
    return f, g


def _reference(X, y, s, o, l2, l2_b, fit_b):
    theta0 = np.zeros(X.shape[1] + int(fit_b))
    res = scipy.optimize.minimize(
        _objective,
        theta0,
        args=(X, y, s, o, l2, l2_b, fit_b),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000},
    )
    return res.x, res.fun


def _solve(X, codes, y, s, o, n_entities, *, l2, l2_b, fit_b, entities=None, coef=None, icpt=None):
    perm, starts = _layout(codes, n_entities)
    d = X.shape[1]
    coef = np.zeros((n_entities, d)) if coef is None else coef
    icpt = np.zeros(n_entities) if icpt is None else icpt
    entities = np.arange(n_entities) if entities is None else entities
    stats = solve_entities(
        sp.csr_matrix(X), perm, starts, y, s, o, entities, coef, icpt,
        l2=l2, intercept_l2=l2_b, fit_intercept=fit_b,
    )  # fmt: skip
    return coef, icpt, stats


def _check_against_reference(X, codes, y, s, o, coef, icpt, l2, l2_b, fit_b, entities):
    for e in entities:
        rows = np.flatnonzero(codes == e)
        Xe = X[rows]
        theta_ref, f_ref = _reference(Xe, y[rows], s[rows], o[rows], l2, l2_b, fit_b)
        theta = coef[e] if not fit_b else np.append(coef[e], icpt[e])
        f, _ = _objective(theta, Xe, y[rows], s[rows], o[rows], l2, l2_b, fit_b)
        assert np.all(np.isfinite(theta)), e
        assert f <= f_ref + 1e-6 * max(1.0, abs(f_ref)), (e, f, f_ref)
        assert abs(f - f_ref) <= 1e-6 * max(1.0, abs(f_ref)), (e, f, f_ref)
        np.testing.assert_allclose(theta, theta_ref, atol=1e-5, rtol=0, err_msg=f"entity {e}")


@pytest.mark.parametrize(
    "l2, l2_b, fit_b, threaded",
    [(1.0, 1.0, True, False), (0.5, 0.01, True, False), (1.0, 1.0, False, False),
     (1.0, 1.0, True, True), (0.5, 0.01, True, True)],
)  # fmt: skip
def test_matches_scipy_per_entity(l2, l2_b, fit_b, threaded, monkeypatch):
    monkeypatch.setattr(newton, "_threaded", lambda n_rows: threaded)
    X, codes, y, s, o = _problem(0)
    n_entities = codes.max() + 1
    coef, icpt, stats = _solve(X, codes, y, s, o, n_entities, l2=l2, l2_b=l2_b, fit_b=fit_b)
    assert stats.n_solved == n_entities
    assert stats.n_converged == n_entities
    if not fit_b:
        assert np.all(icpt == 0.0)
    _check_against_reference(X, codes, y, s, o, coef, icpt, l2, l2_b, fit_b, range(n_entities))


def test_unlisted_entities_untouched_and_warm_start():
    X, codes, y, s, o = _problem(1, n_entities=120)
    n_entities = codes.max() + 1
    rng = np.random.default_rng(5)
    coef0 = rng.normal(size=(n_entities, X.shape[1]))
    icpt0 = rng.normal(size=n_entities)
    coef, icpt = coef0.copy(), icpt0.copy()
    listed = np.sort(rng.choice(n_entities, size=50, replace=False))
    others = np.setdiff1d(np.arange(n_entities), listed)
    stats = _solve(
        X, codes, y, s, o, n_entities, l2=1.0, l2_b=0.5, fit_b=True,
        entities=listed, coef=coef, icpt=icpt,
    )[2]  # fmt: skip
    assert stats.n_solved == 50 and stats.n_converged == 50
    assert np.array_equal(coef[others], coef0[others])
    assert np.array_equal(icpt[others], icpt0[others])
    assert not np.allclose(coef[listed], coef0[listed])
    _check_against_reference(X, codes, y, s, o, coef, icpt, 1.0, 0.5, True, listed[:10])
    coef1, icpt1 = coef.copy(), icpt.copy()
    stats = _solve(
        X, codes, y, s, o, n_entities, l2=1.0, l2_b=0.5, fit_b=True,
        entities=listed, coef=coef, icpt=icpt,
    )[2]  # fmt: skip
    assert stats.max_iter <= 1 and stats.n_converged == 50
    np.testing.assert_allclose(coef, coef1, atol=1e-9, rtol=0)
    np.testing.assert_allclose(icpt, icpt1, atol=1e-9, rtol=0)


def test_degenerate_entities():
    rng = np.random.default_rng(3)
    d = 4
    blocks = {
        "single": (rng.normal(size=(1, d)), np.array([1.0])),
        "all_pos": (rng.normal(size=(12, d)), np.ones(12)),
        "all_neg": (rng.normal(size=(12, d)), np.zeros(12)),
        "constant": (np.tile([2.0, 0.0, -1.0, 3.0], (15, 1)), rng.integers(0, 2, 15) * 1.0),
        "duplicated": (np.repeat(rng.normal(size=(3, d)), 4, axis=0), np.repeat([1.0, 0, 1], 4)),
        "no_features": (np.zeros((6, d)), np.array([1.0, 1, 0, 1, 0, 1])),
    }
    names = list(blocks)
    X = np.vstack([blocks[k][0] for k in names])
    y = np.concatenate([blocks[k][1] for k in names])
    codes = np.repeat(np.arange(len(names)), [len(blocks[k][1]) for k in names]).astype(np.int64)
    s = np.ones(len(y))
    o = np.zeros(len(y))
    for l2, l2_b in [(1.0, 1.0), (0.1, 0.01)]:
        coef, icpt, stats = _solve(X, codes, y, s, o, len(names), l2=l2, l2_b=l2_b, fit_b=True)
        assert stats.n_converged == len(names)
        assert np.all(np.isfinite(coef)) and np.all(np.isfinite(icpt))
        assert icpt[names.index("all_pos")] > 0.0
        assert icpt[names.index("all_neg")] < 0.0
        assert np.all(coef[names.index("no_features")] == 0.0)
        _check_against_reference(X, codes, y, s, o, coef, icpt, l2, l2_b, True, range(len(names)))
    # Duplicated rows are the same problem as the unique rows with weight 4.
    k = names.index("duplicated")
    Xu, yu = blocks["duplicated"][0][::4], blocks["duplicated"][1][::4]
    cu, bu, _ = _solve(
        Xu, np.zeros(3, np.int64), yu, np.full(3, 4.0), np.zeros(3), 1,
        l2=0.1, l2_b=0.01, fit_b=True,
    )  # fmt: skip
    np.testing.assert_allclose(coef[k], cu[0], atol=1e-9, rtol=0)
    assert icpt[k] == pytest.approx(bu[0], abs=1e-9)


def test_score_entities_matches_dense(kernel):
    rng = np.random.default_rng(4)
    n, d, n_entities = 500, 7, 30
    X = rng.normal(size=(n, d)) * (rng.uniform(size=(n, d)) < 0.5)
    codes = rng.integers(-1, n_entities, size=n)
    coef = rng.normal(size=(n_entities, d))
    icpt = rng.normal(size=n_entities)
    got = score_entities(sp.csr_matrix(X), codes, coef, icpt)
    expected = np.where(codes >= 0, icpt[codes] + np.einsum("ij,ij->i", X, coef[codes]), 0.0)
    assert np.any(codes == -1)
    np.testing.assert_allclose(got, expected, atol=1e-12, rtol=1e-12)
    assert np.all(got[codes == -1] == 0.0)


def test_wide_sparse_design(kernel):
    rng = np.random.default_rng(6)
    d, n_entities = 2000, 80
    sizes = rng.integers(1, 30, size=n_entities)
    codes = rng.permutation(np.repeat(np.arange(n_entities), sizes)).astype(np.int64)
    n = len(codes)
    touched = [rng.choice(d, size=5, replace=False) for _ in range(n_entities)]
    rows, cols, vals = [], [], []
    for i, e in enumerate(codes):
        feats = touched[e][rng.uniform(size=5) < 0.6]
        rows += [i] * len(feats)
        cols += feats.tolist()
        vals += rng.normal(size=len(feats)).tolist()
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n, d))
    y = (rng.uniform(size=n) < 0.4).astype(np.float64)
    s = rng.uniform(0.5, 2.0, size=n)
    o = rng.normal(size=n) * 0.3
    perm, starts = _layout(codes, n_entities)
    coef = rng.normal(size=(n_entities, d))  # junk warm start on every feature
    icpt = np.zeros(n_entities)
    stats = solve_entities(
        X, perm, starts, y, s, o, np.arange(n_entities), coef, icpt,
        l2=0.7, intercept_l2=0.2,
    )  # fmt: skip
    assert stats.n_converged == n_entities
    Xd = X.toarray()
    for e in range(n_entities):
        r = np.flatnonzero(codes == e)
        used = np.flatnonzero(np.any(Xd[r] != 0.0, axis=0))
        assert np.all(coef[e, np.setdiff1d(np.arange(d), used)] == 0.0)
        theta_ref, _ = _reference(Xd[np.ix_(r, used)], y[r], s[r], o[r], 0.7, 0.2, True)
        np.testing.assert_allclose(coef[e, used], theta_ref[:-1], atol=1e-5, rtol=0)
        assert icpt[e] == pytest.approx(theta_ref[-1], abs=1e-5)


def test_entity_without_features_or_intercept_gets_the_prior_mode():
    import scipy.sparse as sp

    from gdmix.solvers.newton import solve_entities

    X = sp.csr_matrix(np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]]))
    perm = np.array([0, 1, 2])
    starts = np.array([0, 2, 3])
    coef = np.full((2, 2), 5.0)
    icpt = np.full(2, 3.0)
    y = np.array([1.0, 0.0, 1.0])
    solve_entities(X, perm, starts, y, np.ones(3), np.zeros(3), np.array([0]), coef, icpt,
                   l2=1.0, intercept_l2=1.0, fit_intercept=False)  # fmt: skip
    assert coef[0].tolist() == [0.0, 0.0] and icpt[0] == 0.0
    assert coef[1].tolist() == [5.0, 5.0]  # not listed: untouched

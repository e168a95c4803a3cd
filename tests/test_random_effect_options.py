"""Random-effect options: both kernels, variances, priors, warm start, incremental, cohort."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.sparse as sp

import gdmix
from gdmix.config import parse_config
from gdmix.solvers import newton
from gdmix.solvers.newton import EntityPrior, solve_entities


def _problem(seed, n_entities=200, d=6, max_rows=30):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_rows + 1, size=n_entities)
    codes = rng.permutation(np.repeat(np.arange(n_entities), sizes)).astype(np.int64)
    n = len(codes)
    X = rng.normal(size=(n, d)) * (rng.uniform(size=(n, d)) < 0.7)
    z = np.einsum("ij,ij->i", X, rng.normal(size=(n_entities, d))[codes])
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(float)
    perm = np.argsort(codes, kind="stable").astype(np.int64)
    starts = np.zeros(n_entities + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(codes, minlength=n_entities))
    return sp.csr_matrix(X), codes, y, rng.uniform(0.5, 2, n), rng.normal(0, 0.3, n), perm, starts


def _solve(problem, **kw):
    X, _codes, y, s, o, perm, starts = problem
    n_ent, d = len(starts) - 1, X.shape[1]
    coef, icpt = np.zeros((n_ent, d)), np.zeros(n_ent)
    var, var_b = np.zeros((n_ent, d)), np.zeros(n_ent)
    kw.setdefault("l2", 1.0)
    kw.setdefault("intercept_l2", 0.5)
    if kw.get("variance", "none") != "none":
        kw["variances"] = (var, var_b)
    stats = solve_entities(X, perm, starts, y, s, o, np.arange(n_ent), coef, icpt, **kw)
    return coef, icpt, var, var_b, stats


def _entity_hessian(problem, e, coef, icpt, prec, prec_b):
    X, _codes, _y, s, o, perm, starts = problem
    rows = perm[starts[e] : starts[e + 1]]
    Xe = np.column_stack([X[rows].toarray(), np.ones(len(rows))])
    z = Xe @ np.append(coef[e], icpt[e]) + o[rows]
    p = 1 / (1 + np.exp(-z))
    return Xe.T @ (Xe * (s[rows] * p * (1 - p))[:, None]) + np.diag(np.append(prec, prec_b))


def test_lockstep_and_subspace_kernels_agree(monkeypatch):
    problem = _problem(0)
    lock = _solve(problem)
    monkeypatch.setattr(newton, "LOCKSTEP_MAX_FEATURES", 0)
    sub = _solve(problem)
    np.testing.assert_allclose(lock[0], sub[0], atol=1e-8)
    np.testing.assert_allclose(lock[1], sub[1], atol=1e-8)
    monkeypatch.setattr(newton, "CG_MIN_FEATURES", 1)  # conjugate-gradient Newton steps
    cg = _solve(problem)
    np.testing.assert_allclose(lock[0], cg[0], atol=1e-7)


@pytest.mark.parametrize("kernel", ["lockstep", "subspace"])
@pytest.mark.parametrize("mode", ["simple", "full"])
def test_variances_match_the_hessian(monkeypatch, kernel, mode):
    if kernel == "subspace":
        monkeypatch.setattr(newton, "LOCKSTEP_MAX_FEATURES", 0)
    problem = _problem(1, n_entities=40)
    coef, icpt, var, var_b, _ = _solve(problem, variance=mode)
    d = coef.shape[1]
    for e in range(40):
        H = _entity_hessian(problem, e, coef, icpt, np.full(d, 1.0), 0.5)
        ref = 1 / np.diag(H) if mode == "simple" else np.diag(np.linalg.inv(H))
        # Features an entity never touches have the prior variance 1/l2 in both.
        np.testing.assert_allclose(np.append(var[e], var_b[e]), ref, rtol=1e-8)


def test_prior_mean_and_precision_enter_the_objective():
    problem = _problem(2, n_entities=30)
    X, _codes, y, s, o, perm, starts = problem
    n, d = 30, X.shape[1]
    rng = np.random.default_rng(2)
    prior = EntityPrior(rng.normal(size=(n, d)), rng.uniform(0.5, 5, (n, d)),
                        rng.normal(size=n), rng.uniform(0.5, 5, n))  # fmt: skip
    coef, icpt, *_ = _solve(problem, prior=prior)
    for e in range(n):
        rows = perm[starts[e] : starts[e + 1]]
        Xe, ye, se, oe = X[rows].toarray(), y[rows], s[rows], o[rows]
        mu = np.append(prior.mean[e], prior.intercept_mean[e])
        pr = np.append(prior.precision[e], prior.intercept_precision[e])

        def fun(t, Xe=Xe, ye=ye, se=se, oe=oe, mu=mu, pr=pr):
            z = Xe @ t[:-1] + t[-1] + oe
            p = 1 / (1 + np.exp(-z))
            f = se @ (np.logaddexp(0, z) - ye * z) + 0.5 * pr @ (t - mu) ** 2
            r = se * (p - ye)
            return f, np.append(Xe.T @ r, r.sum()) + pr * (t - mu)

        ref = scipy.optimize.minimize(fun, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                                      options={"gtol": 1e-12, "ftol": 1e-15}).x  # fmt: skip
        np.testing.assert_allclose(np.append(coef[e], icpt[e]), ref, atol=1e-5)


def test_degenerate_entities_do_not_warn():
    X = sp.csr_matrix(np.array([[1.0, 0], [1.0, 0], [0, 0], [2.0, 2.0], [2.0, 2.0]]))
    y = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    perm, starts = np.arange(5), np.array([0, 2, 3, 5])
    coef, icpt = np.zeros((3, 2)), np.zeros(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_entities(X, perm, starts, y, np.ones(5), np.zeros(5), np.arange(3), coef, icpt,
                       l2=1.0, intercept_l2=1.0)  # fmt: skip
    assert np.isfinite(coef).all() and np.isfinite(icpt).all()
    assert icpt[0] > 0 and icpt[2] < 0


# -- through gdmix.fit -------------------------------------------------------------


def _frame(seed, n=4000, n_users=80):
    rng = np.random.default_rng(seed)
    user = rng.integers(0, n_users, n)
    x = rng.normal(size=n)
    bias = np.random.default_rng(99).normal(0, 1, n_users)
    slope = np.random.default_rng(98).normal(0, 1, n_users)
    y = (rng.random(n) < 1 / (1 + np.exp(-(bias[user] + slope[user] * x)))).astype(int)
    return pd.DataFrame({"user": user, "x": x, "label": y})


def _cfg(**re):
    return parse_config({
        "coordinates": [{"name": "u", "type": "random", "entity": "user",
                         "features": {"numeric": ["x"]}, "l2": 1.0, **re}],
        "training": {"n_passes": 1, "progress": False},
    })  # fmt: skip


def test_cohort_mode_equals_entity_mode():
    frame = _frame(3, n=3000, n_users=5)
    a = gdmix.fit(_cfg(variance="full"), frame)["u"]
    b = gdmix.fit(_cfg(mode="cohort", variance="full"), frame)["u"]
    np.testing.assert_allclose(a.coef, b.coef, atol=1e-6)
    np.testing.assert_allclose(a.intercept, b.intercept, atol=1e-6)
    np.testing.assert_allclose(a.variance, b.variance, rtol=1e-5)


def test_variances_round_trip_through_the_model_directory(tmp_path):
    model = gdmix.fit(_cfg(variance="simple"), _frame(4))
    model.save(tmp_path / "m")
    loaded = gdmix.GDMixModel.load(tmp_path / "m")["u"]
    np.testing.assert_array_equal(loaded.variance, model["u"].variance)
    np.testing.assert_array_equal(loaded.intercept_variance, model["u"].intercept_variance)
    assert (model["u"].variance > 0).all()


def test_warm_start_keeps_absent_entities_and_converges_faster(tmp_path):
    old = _frame(5)
    gdmix.fit(_cfg(), old).save(tmp_path / "old")
    new = _frame(6)
    new = new[new["user"] < 60]  # users 60.. are absent from the refresh
    records = []
    warm = gdmix.fit(_cfg(init_model=str(tmp_path / "old")), new, callbacks=[records.append])
    cold_records = []
    cold = gdmix.fit(_cfg(), new, callbacks=[cold_records.append])
    oldm = gdmix.GDMixModel.load(tmp_path / "old")["u"]
    u = warm["u"]
    for uid in range(60, 80):
        e, o = u.entity_ids.get_loc(uid), oldm.entity_ids.get_loc(uid)
        assert u.coef[e].tolist() == oldm.coef[o].tolist() and u.intercept[e] == oldm.intercept[o]
    # Entities in the new data reach the same optimum as a cold start.
    for uid in range(60):
        np.testing.assert_allclose(u.coef[u.entity_ids.get_loc(uid)],
                                   cold["u"].coef[cold["u"].entity_ids.get_loc(uid)],
                                   atol=1e-6)  # fmt: skip
    assert u.n_rows[u.entity_ids.get_loc(70)] == oldm.n_rows[oldm.entity_ids.get_loc(70)]
    assert warm.score(_frame(7))["u"].abs().min() > 0  # every user still has a model


def test_incremental_training_approximates_training_on_all_data(tmp_path):
    first, second = _frame(8, n=6000), _frame(9, n=6000)
    gdmix.fit(_cfg(variance="full"), first).save(tmp_path / "first")
    inc = gdmix.fit(_cfg(variance="full", incremental=True, init_model=str(tmp_path / "first")),
                    second)["u"]  # fmt: skip
    full = gdmix.fit(_cfg(variance="full"), pd.concat([first, second]))["u"]
    only_new = gdmix.fit(_cfg(variance="full"), second)["u"]
    err_inc = np.abs(inc.coef - full.coef).mean() + np.abs(inc.intercept - full.intercept).mean()
    err_new = np.abs(only_new.coef - full.coef).mean()
    err_new += np.abs(only_new.intercept - full.intercept).mean()
    # The Laplace-approximation update is close to the full-data fit, far closer than
    # forgetting the first half.
    assert err_inc < 0.25 * err_new
    assert np.corrcoef(inc.coef[:, 0], full.coef[:, 0])[0, 1] > 0.99


def test_incremental_needs_variances_in_the_previous_model(tmp_path):
    gdmix.fit(_cfg(), _frame(10)).save(tmp_path / "novar")
    with pytest.raises(gdmix.ConfigError, match="no variances"):
        gdmix.fit(_cfg(variance="simple", incremental=True,
                       init_model=str(tmp_path / "novar")), _frame(11))  # fmt: skip
    with pytest.raises(gdmix.ConfigError, match="variance"):
        _cfg(incremental=True, init_model="x")

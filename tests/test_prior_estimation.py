"""l2: auto, the random effects' prior variances estimated by maximising the Laplace
approximation of the marginal likelihood: against lme4's glmer fits (fixtures made by
tests/fixtures/lme4/make_fixtures.R) and known-parameter simulations."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gdmix
from gdmix.config import parse_config
from gdmix.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "lme4"


def _fit(frame: pd.DataFrame, coords: list[dict], **training) -> gdmix.GDMixModel:
    data = {"offset": "offset"} if "offset" in frame.columns else {}
    config = parse_config({"data": data, "coordinates": coords,
                           "training": {"progress": False, **training}})  # fmt: skip
    return gdmix.fit(config, frame)


def _lme4_variances(name: str) -> dict[str, float]:
    table = pd.read_csv(FIXTURES / f"{name}_variances.csv")
    return dict(zip(table["grp"], table["vcov"], strict=True))


def test_cbpp_matches_glmer() -> None:
    """cbpp: a random intercept per herd, the fixed part (period) as the offset."""
    frame = pd.read_csv(FIXTURES / "cbpp_data.csv.gz")
    model = _fit(frame, [{"name": "herd", "type": "random", "entity": "herd", "l2": "auto"}])
    prior = model.history[-1]["prior"]
    ref = _lme4_variances("cbpp")["herd"]
    assert prior["intercept_variance"] == pytest.approx(ref, rel=0.01)
    assert model["herd"].intercept_l2 == pytest.approx(1 / prior["intercept_variance"])
    # The same approximation: glmer's log-likelihood at its optimum is -277.5022.
    assert prior["log_marginal"] == pytest.approx(-277.5022, abs=0.01)
    modes = pd.read_csv(FIXTURES / "cbpp_ranef_herd.csv")
    coord = model["herd"]
    pos = coord.entity_ids.get_indexer(modes["id"])
    np.testing.assert_allclose(coord.intercept[pos], modes["mode"], atol=2e-3)
    np.testing.assert_allclose(coord.intercept_variance[pos], modes["post_var"], rtol=0.02)


def test_verbagg_crossed_random_effects_match_glmer() -> None:
    """VerbAgg: crossed random intercepts per person and per item, estimated together
    inside coordinate descent (block-diagonal Laplace approximation)."""
    frame = pd.read_csv(FIXTURES / "verbagg_data.csv.gz")
    coords = [{"name": g, "type": "random", "entity": g, "l2": "auto"} for g in ("id", "item")]
    model = _fit(frame, coords, n_passes=30)
    ref = _lme4_variances("verbagg")
    last = {r["coordinate"]: r["prior"] for r in model.history}
    for g in ("id", "item"):
        assert last[g]["intercept_variance"] == pytest.approx(ref[g], rel=0.05), g
        modes = pd.read_csv(FIXTURES / f"verbagg_ranef_{g}.csv")
        coord = model[g]
        pos = coord.entity_ids.get_indexer(modes["id"])
        assert (pos >= 0).all()
        assert np.corrcoef(coord.intercept[pos], modes["mode"])[0, 1] > 0.999


def _simulate(seed: int, *, entities: int = 800, rows: int = 80, intercept_var: float = 0.8,
              slope_var: tuple[float, ...] = (0.3, 0.3)) -> pd.DataFrame:  # fmt: skip
    rng = np.random.default_rng(seed)
    e = np.repeat(np.arange(entities), rows)
    b = rng.normal(0, np.sqrt(intercept_var), entities)
    w = rng.normal(0, 1, (entities, len(slope_var))) * np.sqrt(slope_var)
    x = rng.normal(size=(len(e), len(slope_var)))
    z = b[e] + (x * w[e]).sum(axis=1)
    frame = pd.DataFrame({"e": e, "label": (rng.random(len(e)) < 1 / (1 + np.exp(-z))).astype(int)})
    for j in range(len(slope_var)):
        frame[f"x{j}"] = x[:, j]
    return frame


PER_FEATURE = {"name": "u", "type": "random", "entity": "e", "l2": "auto", "prior": "per_feature",
               "features": {"numeric": ["x0", "x1"]}}  # fmt: skip


def _sampling_error(variance: float, posterior_variance: float, draws: int) -> float:
    """Standard error of a variance estimated from ``draws`` effects each known up to its
    posterior variance (their estimates scatter with variance ``variance +
    posterior_variance``)."""
    return (variance + posterior_variance) * np.sqrt(2.0 / draws)


@pytest.mark.parametrize("seed", [0, 1])
def test_known_variances_are_recovered(seed: int) -> None:
    frame = _simulate(seed)
    model = _fit(frame, [{"name": "u", "type": "random", "entity": "e", "l2": "auto",
                          "features": {"numeric": ["x0", "x1"]}}])  # fmt: skip
    prior = model.history[-1]["prior"]
    u = model["u"]
    se_b = _sampling_error(0.8, u.intercept_variance.mean(), 800)
    assert abs(prior["intercept_variance"] - 0.8) < 3 * se_b
    # The slope variance pools 2 x 800 draws.
    se_w = _sampling_error(0.3, u.variance.mean(), 1600)
    assert abs(prior["slope_variance"] - 0.3) < 3 * se_w
    # The steps climb the Laplace approximation (pass after pass: the offsets do not
    # change with one coordinate) and stop at its maximum.
    lms = [t["log_marginal"] for r in model.history for t in r["prior"]["trajectory"]]
    assert prior["converged"] and len(model.history[0]["prior"]["trajectory"]) > 2
    assert lms[-1] >= max(lms) - 1e-6 and lms[-1] > lms[0]
    assert prior["log_marginal"] == lms[-1]


def test_one_variance_per_feature() -> None:
    frame = _simulate(3, slope_var=(0.1, 1.0))
    model = _fit(frame, [PER_FEATURE])
    small, large = model.history[-1]["prior"]["slope_variance"]
    v = model["u"].variance.mean(axis=0)
    assert abs(small - 0.1) < 3 * _sampling_error(0.1, v[0], 800)
    assert abs(large - 1.0) < 3 * _sampling_error(1.0, v[1], 800)
    np.testing.assert_allclose(model["u"].l2_vector(), [1 / small, 1 / large])


def test_estimates_are_saved_with_the_model(tmp_path) -> None:
    frame = _simulate(4, entities=200, rows=30)
    model = _fit(frame, [PER_FEATURE])
    path = model.save(tmp_path / "m")
    manifest = json.loads((path / "manifest.json").read_text())
    entry = manifest["coordinates"][0]
    assert entry["config"]["l2"] == "auto"
    assert len(entry["params"]["l2"]) == 2
    assert "trajectory" in manifest["history"][-1]["prior"]
    loaded = gdmix.GDMixModel.load(path)
    np.testing.assert_allclose(loaded.score(frame)["total"], model.score(frame)["total"])


def test_degenerate_cases_stay_finite(caplog) -> None:
    rng = np.random.default_rng(5)
    # No between-entity variance at all.
    n = 20000
    flat = pd.DataFrame({"e": rng.integers(0, 400, n), "label": rng.integers(0, 2, n)})
    with caplog.at_level(logging.WARNING, logger="gdmix"):
        model = _fit(flat, [{"name": "u", "type": "random", "entity": "e", "l2": "auto"}])
    var = model.history[-1]["prior"]["intercept_variance"]
    assert np.isfinite(var) and var < 0.02
    # Entities with one row, and entities whose labels are all equal (separable).
    frame = _simulate(6, entities=300, rows=3, slope_var=())
    frame.loc[frame["e"] < 30, "label"] = 1
    model = _fit(frame, [{"name": "u", "type": "random", "entity": "e", "l2": "auto"}])
    var = model.history[-1]["prior"]["intercept_variance"]
    assert np.isfinite(var) and 0 < var < 1e4
    assert np.isfinite(model["u"].intercept).all()


def test_auto_needs_no_validation_and_works_with_it() -> None:
    frame = _simulate(7, entities=300, rows=40)
    coords = [{"name": "u", "type": "random", "entity": "e", "l2": "auto",
               "features": {"numeric": ["x0", "x1"]}}]  # fmt: skip
    config = parse_config({"coordinates": coords, "training": {"progress": False, "n_passes": 3}})
    model = gdmix.fit(config, frame.iloc[:9000], frame.iloc[9000:])
    assert model.metrics["best_pass"] >= 1 and "validation" in model.metrics


def test_auto_rules() -> None:
    with pytest.raises(ConfigError, match="does not combine with a list"):
        parse_config({"coordinates": [{"name": "u", "type": "random", "entity": "e",
                                       "l2": "auto", "intercept_l2": [1, 2]}]})  # fmt: skip
    with pytest.raises(ConfigError, match="per_feature"):
        parse_config({"coordinates": [{"name": "u", "type": "random", "entity": "e",
                                       "prior": "per_feature"}]})  # fmt: skip
    config = parse_config({"coordinates": [{"name": "u", "type": "random", "entity": "e",
                                            "l2": "auto"}]})  # fmt: skip
    assert config.coordinates[0].variance == "full"  # the estimate needs them


def test_incremental_refresh_keeps_the_estimate(tmp_path) -> None:
    frame = _simulate(8, entities=300, rows=40)
    coords = [{"name": "u", "type": "random", "entity": "e", "l2": "auto",
               "features": {"numeric": ["x0", "x1"]}}]  # fmt: skip
    model = _fit(frame.iloc[:8000], coords)
    path = model.save(tmp_path / "m")
    result = gdmix.refresh(path, frame.iloc[8000:], mode="incremental", output=tmp_path / "n")
    assert result.model["u"].params["l2"] == pytest.approx(model["u"].params["l2"])
    assert result.model.history[-1]["prior"]["kept_from"] == "init_model"


def test_laplace_pass_matches_numpy_and_finite_differences() -> None:
    """The compiled pass against an independent numpy computation (modes by scipy,
    log det and posterior variances by numpy), and its gradient in the log precisions
    against finite differences of the approximation it returns."""
    from scipy.optimize import minimize

    from gdmix.effects.evidence import component_map, entity_sums
    from gdmix.solvers.newton import design_arrays

    rng = np.random.default_rng(11)
    n_ent, rows, d = 40, 25, 3
    X = rng.normal(size=(n_ent * rows, d))
    X[rng.random(X.shape) < 0.3] = 0.0  # zeros a dense row skips
    b = rng.normal(0, 0.8, n_ent)
    w_true = rng.normal(0, 0.5, (n_ent, d))
    e = np.repeat(np.arange(n_ent), rows)
    off = rng.normal(0, 0.3, len(e))
    y = (rng.random(len(e)) < 1 / (1 + np.exp(-(off + b[e] + (X * w_true[e]).sum(1))))) * 1.0
    wt = rng.uniform(0.5, 1.5, len(e))
    perm, starts = np.arange(len(e)), np.arange(0, len(e) + 1, rows)
    comp = component_map(d, True, False)
    entities = np.arange(n_ent)

    def run(prec: np.ndarray):
        coef, icpt = np.zeros((n_ent, d)), np.zeros(n_ent)
        sums, terms = entity_sums(design_arrays(X), perm, starts, y, wt, off, entities, coef,
                                  icpt, comp, prec, fit_intercept=True, tol=1e-12)  # fmt: skip
        return sums, terms, coef, icpt

    prec = np.array([2.0, 0.7])
    sums, terms, coef, icpt = run(prec)
    # Entity 5 by scipy and numpy.
    r = slice(5 * rows, 6 * rows)
    Xe = np.column_stack([X[r], np.ones(rows)])
    p_slot = np.array([2.0] * d + [0.7])

    def objective(t: np.ndarray) -> float:
        z = off[r] + Xe @ t
        return float(wt[r] @ (np.logaddexp(0, z) - y[r] * z) + 0.5 * p_slot @ t**2)

    mode = minimize(objective, np.zeros(d + 1), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(np.append(coef[5], icpt[5]), mode, atol=1e-5)
    ours = np.append(coef[5], icpt[5])
    prob = 1 / (1 + np.exp(-(off[r] + Xe @ ours)))  # the Hessian at the kernel's mode
    H = Xe.T @ (Xe * (wt[r] * prob * (1 - prob))[:, None]) + np.diag(p_slot)
    np.testing.assert_allclose(terms.logdet[5], np.linalg.slogdet(H)[1], rtol=1e-9)
    np.testing.assert_allclose(terms.variance[5], np.diag(np.linalg.inv(H)), rtol=1e-9)

    # Gradient in u = log p: (n_c - p_c S_c) / 2, against central differences.
    grad = 0.5 * (sums.n - prec * sums.s)
    for c in range(2):
        h = 1e-4
        up, down = prec.copy(), prec.copy()
        up[c] *= np.exp(h)
        down[c] *= np.exp(-h)
        fd = (run(up)[0].own_value() - run(down)[0].own_value()) / (2 * h)
        assert grad[c] == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_entity_order_and_mode_cache_give_the_same_pass() -> None:
    """The rows gathered in entity order (a dense block read through a permutation) and
    the per-entity cache of the data terms between evaluations change nothing: the same
    modes and Laplace statistics, bit for bit."""
    from types import SimpleNamespace

    from gdmix.effects.evidence import component_map, entity_rows, entity_sums
    from gdmix.solvers.laplace import ModeCache
    from gdmix.solvers.newton import design_arrays

    rng = np.random.default_rng(12)
    n_ent, n, d = 60, 1500, 4
    X = np.asfortranarray(rng.normal(size=(n, d)))
    X[rng.random(X.shape) < 0.4] = 0.0
    e = rng.integers(0, n_ent, n)
    perm = np.argsort(e, kind="stable").astype(np.int64)
    starts = np.searchsorted(e[perm], np.arange(n_ent + 1)).astype(np.int64)
    y = (rng.random(n) < 0.4) * 1.0
    wt, off, rho = rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.01, n)
    comp, entities = component_map(d, True, False), np.arange(n_ent)
    rows = entity_rows(SimpleNamespace(X=X, perm=perm, starts=starts))
    assert rows.take is not None and np.array_equal(rows.perm, np.arange(n))

    def run(layout: bool, cache: bool) -> list:
        coef, icpt = np.zeros((n_ent, d)), np.zeros(n_ent)
        held = ModeCache.make(n_ent, d + 1) if cache else None
        out = []
        for prec in ([2.0, 0.7], [1.5, 0.9], [1.5, 0.9]):
            if layout:
                yy, ww, oo, rr = rows.gather(y, wt, off, rho)
                args = (rows.arrays, rows.perm, rows.starts, yy, ww, oo)
            else:
                rr, args = rho, (design_arrays(X), perm, starts, y, wt, off)
            sums, terms = entity_sums(*args, entities, coef, icpt, comp, np.array(prec),
                                      fit_intercept=True, rho=rr, cache=held)  # fmt: skip
            row_terms = rows.scatter(terms.row_terms) if layout else terms.row_terms
            out.append((coef.copy(), icpt.copy(), sums, terms.variance, row_terms))
        return out

    reference = run(False, False)
    for variant in (run(True, False), run(False, True), run(True, True)):
        for (c0, b0, s0, v0, r0), (c1, b1, s1, v1, r1) in zip(reference, variant, strict=True):
            np.testing.assert_array_equal(c1, c0)
            np.testing.assert_array_equal(b1, b0)
            np.testing.assert_array_equal(v1, v0)
            np.testing.assert_array_equal(r1, r0)
            for key in ("loss", "logdet", "quad", "rho_before", "rho_after"):
                assert getattr(s1, key) == getattr(s0, key), key
            np.testing.assert_array_equal(s1.s, s0.s)
            np.testing.assert_array_equal(s1.curvature, s0.curvature)
    # At unchanged precisions the entities are already at their modes: no Newton step.
    assert reference[2][2].iter_sum == 0

"""Block coordinate descent against independent references.

The GLMix objective is jointly convex, so coordinate descent must reach the joint
MAP optimum that one scipy L-BFGS over all parameters finds.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.optimize

import gdmix
from gdmix.config import parse_config


def _simulate(seed: int, n: int, n_users: int, n_items: int) -> pd.DataFrame:
    return _simulate_with_truth(seed, n, n_users, n_items)[0]


def _simulate_with_truth(seed: int, n: int, n_users: int, n_items: int):
    rng = np.random.default_rng(seed)
    user = rng.integers(0, n_users, n)
    item = rng.integers(0, n_items, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    u_slope = rng.normal(0, 0.8, n_users)
    u_bias = rng.normal(0, 1.0, n_users)
    i_bias = rng.normal(0, 1.0, n_items)
    logit = 0.3 + 0.8 * x1 - 0.5 * x2 + u_slope[user] * x2 + u_bias[user] + i_bias[item]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame({"user": user, "item": item, "x1": x1, "x2": x2, "label": y})
    return frame, {"u_bias": u_bias, "i_bias": i_bias, "u_slope": u_slope}


def _config(n_passes: int, l2=(1.0, 2.0, 0.5), **training) -> gdmix.GDMixConfig:
    return parse_config(
        {
            "coordinates": [
                {"name": "fe", "type": "fixed", "l2": l2[0], "features": {"numeric": ["x1", "x2"]}},
                {"name": "u", "type": "random", "entity": "user", "l2": l2[1],
                 "features": {"numeric": ["x2"]}, "tol": 1e-12},
                {"name": "i", "type": "random", "entity": "item", "l2": l2[2]},
            ],
            "training": {"n_passes": n_passes, "progress": False, "tol": 0.0, **training},
        }
    )  # fmt: skip


def _joint_optimum(frame: pd.DataFrame, l2=(1.0, 2.0, 0.5)) -> np.ndarray:
    """All parameters at once: [w1, w2, b, user slopes, user biases, item biases]."""
    y = frame["label"].to_numpy(float)
    x1, x2 = frame["x1"].to_numpy(), frame["x2"].to_numpy()
    u, it = frame["user"].to_numpy(), frame["item"].to_numpy()
    nu, ni = u.max() + 1, it.max() + 1

    def fun(t):
        w1, w2, b = t[:3]
        us, ub, ib = t[3 : 3 + nu], t[3 + nu : 3 + 2 * nu], t[3 + 2 * nu :]
        z = w1 * x1 + w2 * x2 + b + us[u] * x2 + ub[u] + ib[it]
        p = 1 / (1 + np.exp(-z))
        f = np.sum(np.logaddexp(0, z) - y * z)
        f += 0.5 * (l2[0] * (w1**2 + w2**2) + l2[1] * (us @ us + ub @ ub) + l2[2] * ib @ ib)
        r = p - y
        g = np.concatenate(
            [
                [r @ x1 + l2[0] * w1, r @ x2 + l2[0] * w2, r.sum()],
                np.bincount(u, r * x2, nu) + l2[1] * us,
                np.bincount(u, r, nu) + l2[1] * ub,
                np.bincount(it, r, ni) + l2[2] * ib,
            ]
        )
        return f, g

    res = scipy.optimize.minimize(
        fun, np.zeros(3 + 2 * nu + ni), jac=True, method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 20000},
    )  # fmt: skip
    return res.x


# Random-effect priors strong enough for coordinate descent to converge in few passes
# (with weak priors the three intercepts are nearly confounded and it crawls).
COUPLED_L2 = (1.0, 20.0, 20.0)


def test_coordinate_descent_reaches_the_joint_optimum():
    frame = _simulate(0, 1500, 12, 9)
    model = gdmix.fit(_config(40, COUPLED_L2, early_stopping=False), frame)
    ref = _joint_optimum(frame, COUPLED_L2)
    nu = 12
    fe = model["fe"]
    np.testing.assert_allclose([*fe.coef, fe.intercept], ref[:3], atol=1e-5)
    u = model["u"]
    np.testing.assert_allclose(u.coef[:, 0], ref[3 : 3 + nu], atol=1e-5)
    np.testing.assert_allclose(u.intercept, ref[3 + nu : 3 + 2 * nu], atol=1e-5)
    np.testing.assert_allclose(model["i"].intercept, ref[3 + 2 * nu :], atol=1e-5)


def test_score_bookkeeping_total_is_offset_plus_coordinates():
    frame = _simulate(1, 800, 10, 6)
    frame["off"] = np.random.default_rng(1).normal(size=len(frame))
    config = _config(2)
    config = config.model_copy(update={"data": config.data.model_copy(update={"offset": "off"})})
    model = gdmix.fit(config, frame)
    scores = model.score(frame)
    parts = scores["fe"] + scores["u"] + scores["i"] + frame["off"]
    np.testing.assert_allclose(scores["total"], parts, atol=1e-12)
    np.testing.assert_allclose(scores["offset"], frame["off"])
    # Fixed effect by hand: x . w + b.
    fe = model["fe"]
    by_hand = frame[["x1", "x2"]].to_numpy() @ fe.coef + fe.intercept
    np.testing.assert_allclose(scores["fe"], by_hand, atol=1e-12)


def test_offset_enters_every_coordinate():
    """A model trained with offset o on data equals one that absorbs o exactly."""
    frame = _simulate(2, 1000, 8, 5)
    rng = np.random.default_rng(2)
    frame["off"] = rng.normal(size=len(frame))
    cfg = _config(40, COUPLED_L2, early_stopping=False)
    with_offset = cfg.model_copy(update={"data": cfg.data.model_copy(update={"offset": "off"})})
    model = gdmix.fit(with_offset, frame)
    y = frame["label"].to_numpy(float)
    x1, x2, off = frame["x1"].to_numpy(), frame["x2"].to_numpy(), frame["off"].to_numpy()
    X = np.column_stack([x1, x2])
    # Coordinate-wise check: fixed effect is optimal given the others' scores + offset.
    s = model.score(frame)
    others = (s["u"] + s["i"] + off).to_numpy()
    fe = model["fe"]

    def grad(t):
        z = X @ t[:2] + t[2] + others
        r = 1 / (1 + np.exp(-z)) - y
        return np.append(X.T @ r + 1.0 * t[:2], r.sum())

    assert np.abs(grad(np.append(fe.coef, fe.intercept))).max() < 1e-4


def test_recovers_known_random_effects():
    frame, truth = _simulate_with_truth(3, 30000, 50, 40)
    model = gdmix.fit(_config(3), frame)
    u = model["u"]
    users = u.entity_ids.to_numpy()
    assert np.corrcoef(u.intercept, truth["u_bias"][users])[0, 1] > 0.9
    assert np.corrcoef(u.coef[:, 0], truth["u_slope"][users])[0, 1] > 0.8
    i = model["i"]
    assert np.corrcoef(i.intercept, truth["i_bias"][i.entity_ids.to_numpy()])[0, 1] > 0.9


def test_l2_search_picks_the_best_validation_candidate():
    frame = _simulate(4, 6000, 40, 30)
    train, val = frame.iloc[:4500], frame.iloc[4500:]
    grid = [0.1, 3.0, 300.0]
    config = parse_config(
        {
            "coordinates": [
                {"name": "fe", "type": "fixed", "l2": 1.0, "features": {"numeric": ["x1", "x2"]}},
                {"name": "u", "type": "random", "entity": "user", "l2": grid},
            ],
            "training": {"n_passes": 1, "progress": False},
        }
    )
    records = []
    model = gdmix.fit(config, train, val, callbacks=[records.append])
    u_records = [r for r in records if r["coordinate"] == "u"]
    assert [r["params"]["l2"] for r in u_records] == sorted(grid, reverse=True)
    best = max(u_records, key=lambda r: r["validation_auc"])
    assert model["u"].l2 == best["params"]["l2"]
    # The kept model is the selected candidate's: refit with that l2 alone matches.
    single = config.model_copy(deep=True)
    single.coordinates[1].l2 = best["params"]["l2"]
    ref = gdmix.fit(single, train, val)
    np.testing.assert_allclose(model["u"].intercept, ref["u"].intercept, atol=1e-6)
    assert model.metrics["validation"]["auc"] == pytest.approx(best["validation_auc"])


def test_grid_search_matches_coordinate_search_on_one_coordinate():
    frame = _simulate(5, 5000, 30, 20)
    train, val = frame.iloc[:4000], frame.iloc[4000:]
    raw = {
        "coordinates": [
            {"name": "fe", "type": "fixed", "l2": 1.0, "features": {"numeric": ["x1", "x2"]}},
            {"name": "i", "type": "random", "entity": "item", "l2": [0.3, 3.0, 30.0]},
        ],
        "training": {"n_passes": 1, "progress": False},
    }
    a = gdmix.fit(parse_config(raw), train, val)
    raw["training"]["l2_search"] = "grid"
    b = gdmix.fit(parse_config(raw), train, val)
    assert a["i"].l2 == b["i"].l2


def test_early_stopping_keeps_the_best_pass():
    frame = _simulate(6, 4000, 30, 20)
    train, val = frame.iloc[:3000], frame.iloc[3000:]
    records = []
    model = gdmix.fit(_config(10, min_delta=0.0), train, val, callbacks=[records.append])
    passes = {r["pass"] for r in records}
    assert max(passes) < 10  # stopped early
    end_of_pass = {r["pass"]: r["validation_auc"] for r in records if r["coordinate"] == "i"}
    best = max(end_of_pass, key=end_of_pass.get)
    assert model.metrics["best_pass"] == best
    assert model.metrics["validation"]["auc"] == pytest.approx(end_of_pass[best])


def test_validation_metric_log_loss():
    frame = _simulate(7, 3000, 20, 10)
    train, val = frame.iloc[:2500], frame.iloc[2500:]
    model = gdmix.fit(_config(2, metric="log_loss"), train, val)
    assert np.isfinite(model.metrics["validation"]["log_loss"])


def test_min_rows_leaves_small_entities_without_a_model():
    frame = _simulate(8, 2000, 10, 8)
    extra = frame.iloc[:2].copy()
    extra["user"] = 999  # an entity with 2 rows
    frame = pd.concat([frame, extra], ignore_index=True)
    config = _config(1)
    config.coordinates[1].min_rows = 3
    model = gdmix.fit(config, frame)
    u = model["u"]
    code = u.entity_ids.get_loc(999)
    assert not u.active[code]
    assert u.coef[code].tolist() == [0.0] and u.intercept[code] == 0.0
    scores = model.score(frame)
    assert (scores["u"].to_numpy()[-2:] == 0).all()
    # Saved model holds active entities only; loading keeps the scores.
    assert 999 not in u.coefficient_table()["entity_id"].tolist()


def test_random_effect_penalty_is_the_priors_sum_of_squares():
    """The objective's random-effect term: l2/2 ||w_e||^2 + intercept_l2/2 b_e^2 summed
    over the entities with a model (all of them, or all but one below min_rows)."""
    frame = _simulate(9, 2000, 10, 8)
    extra = frame.iloc[:2].copy()
    extra["user"] = 999
    frame = pd.concat([frame, extra], ignore_index=True)
    for min_rows in (1, 3):
        config = _config(1)
        config.coordinates[1].min_rows = min_rows
        u = gdmix.fit(config, frame)["u"]
        keep = u.has_model
        assert keep.sum() == (len(keep) if min_rows == 1 else len(keep) - 1)
        expected = 0.5 * (2.0 * np.sum(u.coef[keep] ** 2)
                          + u.intercept_l2 * np.sum(u.intercept[keep] ** 2))  # fmt: skip
        assert u.penalty() == pytest.approx(expected, rel=1e-12)


def test_max_rows_downsamples_with_reweighting():
    frame = _simulate(9, 3000, 3, 4)  # ~1000 rows per user
    config = _config(1)
    config.coordinates[1].max_rows = 200
    model = gdmix.fit(config, frame)
    ref = gdmix.fit(_config(1), frame)
    # Down-sampled estimates are noisier but close to the full-data ones.
    np.testing.assert_allclose(model["u"].intercept, ref["u"].intercept, atol=0.5)
    assert not np.allclose(model["u"].intercept, ref["u"].intercept, atol=1e-8)

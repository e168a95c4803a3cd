"""l2: auto on the Dask engine (a 2-worker LocalCluster): the same estimates, modes and
posterior variances as the local engine, from sums computed bucket by bucket."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import gdmix
from gdmix.config import parse_config
from gdmix.engines.dask_engine import fit_dask


@pytest.fixture
def client(dask_client):
    """The session's LocalCluster (tests/conftest.py)."""
    return dask_client


def _frame(seed: int, n: int = 12000, users: int = 300) -> pd.DataFrame:
    """Users with random intercepts and slopes on x2, items with random intercepts."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, users, n), rng.integers(0, 90, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["a", "b", "c"], n)
    z = (0.5 * x1 + rng.normal(0, 0.9, users)[user] + rng.normal(0, 0.7, 90)[item]
         + rng.normal(0, 0.5, users)[user] * x2 + (color == "a"))  # fmt: skip
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return pd.DataFrame({"uid": np.arange(n), "user": user, "item": item.astype(str),
                         "x1": x1, "x2": x2, "color": color, "label": y})  # fmt: skip


def _config(user: dict | None = None, **training) -> gdmix.GDMixConfig:
    return parse_config({
        "data": {"uid": "uid"},
        "coordinates": [
            {"name": "fe", "type": "fixed", "l2": 0.5,
             "features": {"numeric": ["x1"], "categorical": ["color"]}},
            {"name": "per_user", "type": "random", "entity": "user", "l2": "auto",
             "features": {"numeric": ["x2"]}, **(user or {})},
            {"name": "per_item", "type": "random", "entity": "item", "l2": "auto"},
        ],
        "training": {"n_passes": 3, "progress": False, "early_stopping": False, **training},
    })  # fmt: skip


def _priors(model: gdmix.GDMixModel) -> list[tuple[str, dict]]:
    return [(r["coordinate"], r["prior"]) for r in model.history if "prior" in r]


def _assert_same(local: gdmix.GDMixModel, remote: gdmix.GDMixModel) -> None:
    pl, pr = _priors(local), _priors(remote)
    assert [c for c, _ in pl] == [c for c, _ in pr] and pl
    for (name, a), (_, b) in zip(pl, pr, strict=True):
        for key in ("intercept_variance", "slope_variance"):
            if a.get(key) is None:
                assert b.get(key) is None
                continue
            np.testing.assert_allclose(b[key], a[key], rtol=1e-7, err_msg=f"{name} {key}")
        assert b["log_marginal"] == pytest.approx(a["log_marginal"], rel=1e-9, abs=1e-6)
        assert len(b["trajectory"]) == len(a["trajectory"])
        assert len(b["subset_trajectory"]) == len(a["subset_trajectory"])
    for name in ("per_user", "per_item"):
        ra, rb = local[name], remote[name]
        assert ra.entity_ids.equals(rb.entity_ids)
        np.testing.assert_allclose(rb.params["l2"], ra.params["l2"], rtol=1e-7)
        np.testing.assert_allclose(rb.intercept, ra.intercept, atol=1e-7)
        np.testing.assert_allclose(rb.coef, ra.coef, atol=1e-7)
        np.testing.assert_allclose(rb.intercept_variance, ra.intercept_variance, rtol=1e-6)
        np.testing.assert_allclose(rb.variance, ra.variance, rtol=1e-6)


def test_dask_estimates_equal_local_engine(client) -> None:
    """Two random effects with l2: auto, estimated together inside coordinate descent
    (each one's gradient counting the other's Hessians), with validation data; 600 users:
    the cold start's first stage on a quarter of them."""
    frame = _frame(0, users=600)
    train, val = frame.iloc[:10000].reset_index(drop=True), frame.iloc[10000:]
    local = gdmix.fit(_config(), train, val)
    remote = fit_dask(_config(), train, val, client=client)
    _assert_same(local, remote)
    assert remote.metrics["validation"]["auc"] == pytest.approx(local.metrics["validation"]["auc"])
    # The estimates are not the starting values: they moved to the data's variances.
    user = remote.history[-2]["prior"]
    assert 0.3 < user["intercept_variance"] < 2.0 and 0.05 < user["slope_variance"] < 1.0
    assert remote.history[1]["prior"]["subset_trajectory"]  # per_user's cold start


def test_dask_per_feature_and_given_intercept_prior(client) -> None:
    """One slope variance per feature, the intercept's prior given; no validation."""
    frame = _frame(1, n=8000)
    frame["x3"] = np.random.default_rng(2).normal(size=len(frame))
    user = {"prior": "per_feature", "intercept_l2": 1.5, "features": {"numeric": ["x2", "x3"]}}
    local = gdmix.fit(_config(user, n_passes=2), frame)
    remote = fit_dask(_config(user, n_passes=2), frame, client=client)
    _assert_same(local, remote)
    prior = remote.history[-2]["prior"]
    assert prior["intercept_variance"] is None and len(prior["slope_variance"]) == 2
    assert remote["per_user"].params["intercept_l2"] == pytest.approx(1.5)


def test_dask_auto_model_saves_and_scores_like_local(client, tmp_path) -> None:
    frame = _frame(3, n=6000)
    remote = fit_dask(_config(n_passes=1), frame, client=client)
    path = remote.save(tmp_path / "m")
    loaded = gdmix.GDMixModel.load(path)
    local = gdmix.fit(_config(n_passes=1), frame)
    np.testing.assert_allclose(loaded.score(frame)["total"], local.score(frame)["total"],
                               atol=1e-7)  # fmt: skip


def test_dask_incremental_keeps_the_previous_estimate(client, tmp_path) -> None:
    """An incremental refresh with l2: auto keeps the previous model's estimate as the
    prior of new entities (known ones have their posterior), as the local engine does."""
    frame = _frame(4, n=6000)
    first = gdmix.fit(_config(n_passes=1), frame.iloc[:4000]).save(tmp_path / "first")
    raw = _config(n_passes=1).model_dump()
    raw["coordinates"][0].update(locked=True, init_model=str(first))
    for c in raw["coordinates"][1:]:
        c.update(init_model=str(first), incremental=True)
    new = frame.iloc[4000:].reset_index(drop=True)
    local = gdmix.fit(parse_config(raw), new)
    remote = fit_dask(parse_config(raw), new, client=client)
    old = gdmix.GDMixModel.load(first)
    for name in ("per_user", "per_item"):
        assert remote[name].params["l2"] == pytest.approx(old[name].params["l2"])
        assert local[name].params["l2"] == pytest.approx(old[name].params["l2"])
        np.testing.assert_allclose(remote[name].intercept, local[name].intercept, atol=1e-8)
    assert all(r["prior"]["kept_from"] == "init_model" for r in remote.history if "prior" in r)

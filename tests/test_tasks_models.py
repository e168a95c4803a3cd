"""``task: linear`` and ``task: poisson`` through gdmix.fit, scoring, evaluation, saving and
the streaming engine, against scikit-learn, statsmodels and per-entity closed forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import statsmodels.api as sm
from sklearn.linear_model import Ridge

import gdmix
from gdmix.config import parse_config
from gdmix.errors import ConfigError, DataError

FEATURES = ["x0", "x1", "x2"]


def _frame(task: str, seed: int = 0, n_entities: int = 60, rows: int = 25) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(123)
    n = n_entities * rows
    entity = rng.permutation(np.repeat(np.arange(n_entities), rows))
    X = rng.normal(size=(n, 3))
    w_entity = truth.normal(0.0, 0.4, n_entities)
    b_entity = truth.normal(0.0, 0.4, n_entities)
    offset = rng.normal(0.0, 0.2, n)
    z = X @ np.array([0.4, -0.3, 0.2]) + 0.3 + X[:, 0] * w_entity[entity] + b_entity[entity]
    z = z + offset
    y = z + rng.normal(size=n) if task == "linear" else rng.poisson(np.exp(z)).astype(float)
    frame = pd.DataFrame({"entity": entity, **{f: X[:, j] for j, f in enumerate(FEATURES)}})
    frame["w"] = rng.uniform(0.5, 2.0, n)
    frame["off"] = offset
    frame["y"] = y
    return frame


def _config(task: str, *, random: bool = True, l2: float = 1.0, **training) -> dict:
    coords = [{"name": "global", "type": "fixed", "features": {"numeric": FEATURES}, "l2": l2}]
    if random:
        coords.append({"name": "per_entity", "type": "random", "entity": "entity",
                       "features": {"numeric": ["x0"]}, "l2": 2.0})  # fmt: skip
    return {
        "task": task,
        "data": {"label": "y", "weight": "w", "offset": "off"},
        "coordinates": coords,
        "training": {"n_passes": 1, "progress": False, **training},
    }


def test_linear_fixed_effect_is_ridge():
    frame = _frame("linear")
    model = gdmix.fit(parse_config(_config("linear", random=False, l2=4.0)), frame)
    ref = Ridge(alpha=4.0).fit(frame[FEATURES], frame["y"] - frame["off"], sample_weight=frame["w"])
    np.testing.assert_allclose(model["global"].coef, ref.coef_, atol=1e-8)
    assert model["global"].intercept == pytest.approx(ref.intercept_, abs=1e-8)
    expected = frame["off"] + ref.predict(frame[FEATURES])
    np.testing.assert_allclose(model.predict(frame), expected, atol=1e-7)
    with pytest.raises(ValueError, match=r"model\.predict"):
        model.predict_proba(frame)


def test_poisson_model_matches_statsmodels_then_per_entity_scipy():
    frame = _frame("poisson", seed=1)
    model = gdmix.fit(parse_config(_config("poisson", l2=0.0)), frame)
    # first update: the fixed effect alone, an unpenalised Poisson GLM with offset
    glm = sm.GLM(frame["y"], sm.add_constant(frame[FEATURES]), family=sm.families.Poisson(),
                 offset=frame["off"], freq_weights=frame["w"]).fit(tol=1e-12)  # fmt: skip
    np.testing.assert_allclose(model["global"].coef, glm.params.iloc[1:], atol=1e-6)
    # then each entity: a penalised Poisson regression with the fixed effect as offset
    fe = model.score(frame)["global"].to_numpy() + frame["off"].to_numpy()
    re = model.coefficient_table("per_entity").set_index("entity_id")
    for e in (0, 17, 41):
        rows = (frame["entity"] == e).to_numpy()
        A = np.c_[frame.loc[rows, "x0"], np.ones(rows.sum())]
        y, w, o = frame.loc[rows, "y"].to_numpy(), frame.loc[rows, "w"].to_numpy(), fe[rows]

        def f(t, A=A, y=y, w=w, o=o):
            z = A @ t + o
            return w @ (np.exp(z) - y * z) + t @ t, A.T @ (w * (np.exp(z) - y)) + 2.0 * t

        ref = scipy.optimize.minimize(f, np.zeros(2), jac=True, method="L-BFGS-B",
                                      options={"gtol": 1e-12, "ftol": 1e-15}).x  # fmt: skip
        got = re.loc[e]
        assert got["x0"] == pytest.approx(ref[0], abs=1e-6)
        assert got["intercept"] == pytest.approx(ref[1], abs=1e-6)
    metrics = model.evaluate(frame)
    assert {"poisson_deviance", "rmse", "poisson_deviance_after@per_entity"} <= set(metrics)
    history = model.history[-1]
    assert history["train_poisson_deviance"] == pytest.approx(metrics["poisson_deviance"])


def test_task_survives_saving_and_selects_by_its_metric(tmp_path):
    train, valid = _frame("linear", seed=2), _frame("linear", seed=3)
    raw = _config("linear", n_passes=3)
    raw["coordinates"][1]["l2"] = [0.1, 10.0]
    model = gdmix.fit(parse_config(raw), train, valid)
    assert model.metrics["validation"].keys() == {"rmse"}
    candidates = [r for r in model.history if r["coordinate"] == "per_entity" and r["pass"] == 1]
    best = min(candidates, key=lambda r: r["validation_rmse"])
    assert best["selected"]
    model.save(tmp_path / "m")
    loaded = gdmix.GDMixModel.load(tmp_path / "m")
    assert loaded.task == "linear"
    np.testing.assert_allclose(loaded.predict(valid), model.predict(valid), atol=1e-12)


def test_streaming_engine_trains_the_same_poisson_model(tmp_path):
    frame = _frame("poisson", seed=4)
    frame.to_parquet(tmp_path / "train.parquet")
    raw = _config("poisson", n_passes=2)
    raw["data"]["train"] = str(tmp_path / "train.parquet")
    local = gdmix.fit(parse_config(raw))
    raw["training"].update(engine="streaming", streaming={"n_buckets": 2, "batch_rows": 400})
    streamed = gdmix.fit(parse_config(raw))
    np.testing.assert_allclose(streamed.predict(frame), local.predict(frame), rtol=1e-6)


def test_cli_writes_means_and_evaluates(tmp_path):
    import json
    import subprocess
    import sys

    frame = _frame("poisson", seed=5)
    frame.to_parquet(tmp_path / "d.parquet")
    model = gdmix.fit(parse_config(_config("poisson")), frame)
    model.save(tmp_path / "m")
    run = [sys.executable, "-m", "gdmix", "score", "--model", str(tmp_path / "m"), "--data",
           str(tmp_path / "d.parquet"), "--output", str(tmp_path / "s.parquet"),
           "--output-probabilities"]  # fmt: skip
    subprocess.run(run, check=True, capture_output=True)
    scores = pd.read_parquet(tmp_path / "s.parquet")
    np.testing.assert_allclose(scores["mean"], np.exp(scores["total"]), rtol=1e-12)
    out = subprocess.run([sys.executable, "-m", "gdmix", "evaluate", "--model",
                          str(tmp_path / "m"), "--data", str(tmp_path / "d.parquet")],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert json.loads(out)["poisson_deviance"] > 0


def test_task_rules():
    with pytest.raises(ConfigError, match="not a metric of task"):
        parse_config({**_config("linear"), "training": {"metric": "auc"}})
    deep = {"name": "deep", "type": "deep", "features": {"numeric": FEATURES}}
    with pytest.raises(ConfigError, match="supports task 'logistic' only"):
        parse_config({**_config("linear", random=False), "coordinates": [deep]})
    with pytest.raises(ConfigError, match="set 'task' once"):
        parse_config({**_config("linear"), "data": {"label": "y", "task": "poisson"}})
    frame = _frame("poisson")
    frame.loc[3, "y"] = -1.0
    with pytest.raises(DataError, match="counts >= 0"):
        gdmix.fit(parse_config(_config("poisson")), frame)


@pytest.mark.parametrize("task", ["linear", "poisson"])
def test_dask_engine_trains_the_local_model(task, dask_client):
    """Tasks and the elastic net on the Dask engine: the local engine's model."""
    from gdmix.engines.dask_engine import fit_dask

    train, valid = _frame(task, seed=6), _frame(task, seed=7)
    raw = _config(task, n_passes=2)
    raw["coordinates"][0]["l1"] = 5.0
    local = gdmix.fit(parse_config(raw), train, valid)
    raw["training"]["engine"] = "dask"
    remote = fit_dask(parse_config(raw), train, valid, client=dask_client)
    np.testing.assert_allclose(remote.predict(valid), local.predict(valid), rtol=1e-6, atol=1e-6)
    metric = "rmse" if task == "linear" else "poisson_deviance"
    assert remote.metrics["validation"][metric] == pytest.approx(
        local.metrics["validation"][metric], rel=1e-7
    )

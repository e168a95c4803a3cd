"""The LightGBM fixed effect (type "gbdt") against plain LightGBM.

The references call ``lightgbm.train`` directly on the same numbers, with the LightGBM
parameters written out here (not taken from gdmix), so the tests check that gdmix passes
the offset, weights, validation offset and categorical columns the way LightGBM means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

lgb = pytest.importorskip("lightgbm")
from sklearn.metrics import roc_auc_score  # noqa: E402

import gdmix  # noqa: E402
from gdmix.config import parse_config  # noqa: E402
from gdmix.errors import ConfigError, DataError, ModelDirectoryError  # noqa: E402
from gdmix.metrics import log_loss  # noqa: E402
from gdmix.model import GDMixModel, make_coordinate  # noqa: E402

N_TREES = 40
# The settings every test's gbdt coordinate uses, and what they mean to LightGBM.
GBDT = {
    "n_estimators": N_TREES,
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "early_stopping_rounds": 10,
    "seed": 3,
    "l2": 0.5,
    "params": {"num_threads": 1},
}
LGB_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "lambda_l2": 0.5,
    "seed": 3,
    "deterministic": True,
    "force_col_wise": True,
    "verbosity": -1,
    "num_threads": 1,
}
COLORS = ["red", "green", "blue", "black"]


def _simulate(seed: int, n: int, n_users: int = 50, user_sd: float = 0.0) -> pd.DataFrame:
    """A nonlinear signal in x1, x2 and a colour, plus optional per-user biases."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.uniform(-2, 2, n), rng.uniform(-2, 2, n)
    color = rng.choice(COLORS, n)
    effects = dict(zip(COLORS, [0.8, -0.8, 0.0, 0.4], strict=True))
    color_effect = pd.Series(color).map(effects).to_numpy()
    user = rng.integers(0, n_users, n)
    user_bias = np.random.default_rng(1000 + seed).normal(0.0, user_sd, n_users)
    logit = 1.5 * np.sin(2 * x1) + np.where(x2 > 0.5, 1.2, -0.4) * np.sign(x1) + color_effect
    logit = logit + user_bias[user]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame({"user": user, "x1": x1, "x2": x2, "color": color, "label": y})


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    n = len(frame)
    a, b = int(0.6 * n), int(0.8 * n)
    parts = frame.iloc[:a], frame.iloc[a:b], frame.iloc[b:]
    return tuple(p.reset_index(drop=True) for p in parts)


def _gbdt(features: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"name": "gbdt", "type": "gbdt", "features": features, **GBDT, **changes}


def _config(*coords: dict[str, Any], **training: Any) -> gdmix.GDMixConfig:
    return parse_config(
        {"coordinates": list(coords), "training": {"progress": False, **training}},
        where="test",
    )


def _coordinate(frame: pd.DataFrame, features: dict[str, Any], **changes: Any):
    coord = make_coordinate(_config(_gbdt(features, **changes)).coordinates[0])
    coord.build(frame)
    return coord


def _numeric(frame: pd.DataFrame) -> np.ndarray:
    return frame[["x1", "x2"]].to_numpy(dtype=np.float64)


NUMERIC = {"numeric": ["x1", "x2"]}


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _split(_simulate(0, 5000, user_sd=1.2))


def test_auc_matches_plain_lightgbm(tables) -> None:
    train, validation, test = tables
    model = gdmix.fit(_config(_gbdt(NUMERIC, n_estimators=300)), train, validation)
    ours = roc_auc_score(test["label"], model.score(test)["total"])

    dtrain = lgb.Dataset(_numeric(train), train["label"].to_numpy(float))
    dval = lgb.Dataset(_numeric(validation), validation["label"].to_numpy(float), reference=dtrain)
    booster = lgb.train(
        LGB_PARAMS,
        dtrain,
        num_boost_round=300,
        valid_sets=[dval],
        callbacks=[lgb.early_stopping(10, first_metric_only=True, verbose=False)],
    )
    ref = roc_auc_score(test["label"], booster.predict(_numeric(test), raw_score=True))
    assert ref > 0.75  # the nonlinear signal is learned
    assert abs(ours - ref) < 0.005


def test_offset_is_init_score_and_weights_pass_through(tables) -> None:
    train = tables[0]
    rng = np.random.default_rng(1)
    offset, weight = rng.normal(0, 1, len(train)), rng.uniform(0.5, 2.0, len(train))
    y = train["label"].to_numpy(float)
    coord = _coordinate(train, NUMERIC)
    design = coord.design(train, "training data")
    coord.fit(design, y, weight, offset, l2=0.5)

    ref = lgb.train(
        LGB_PARAMS,
        lgb.Dataset(_numeric(train), y, weight=weight, init_score=offset),
        num_boost_round=N_TREES,
    )
    assert coord.booster.num_trees() == ref.num_trees() == N_TREES
    ours = coord.score(design)
    theirs = ref.predict(_numeric(train), raw_score=True)  # the trees only, no init score
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)
    assert coord.booster.dump_model()["tree_info"] == ref.dump_model()["tree_info"]


def test_validation_offset_drives_early_stopping(tables) -> None:
    train, validation, _ = tables
    rng = np.random.default_rng(2)
    offset, v_offset = rng.normal(0, 1, len(train)), rng.normal(0, 1, len(validation))
    y, vy = train["label"].to_numpy(float), validation["label"].to_numpy(float)
    coord = _coordinate(train, NUMERIC, n_estimators=500)
    val = gdmix.effects.base.Validation(
        coord.design(validation, "validation data"), vy, np.ones(len(vy)), v_offset
    )
    diag = coord.fit(coord.design(train, "train"), y, np.ones(len(y)), offset, l2=0.5,
                     validation=val)  # fmt: skip

    dtrain = lgb.Dataset(_numeric(train), y, init_score=offset)
    dval = lgb.Dataset(_numeric(validation), vy, init_score=v_offset, reference=dtrain)
    ref = lgb.train(
        LGB_PARAMS,
        dtrain,
        num_boost_round=500,
        valid_sets=[dval],
        callbacks=[lgb.early_stopping(10, first_metric_only=True, verbose=False)],
    )
    assert 0 < ref.best_iteration < diag["n_rounds"] < 500
    assert coord.booster.num_trees() == diag["n_trees"] == ref.best_iteration
    theirs = ref.predict(_numeric(validation), raw_score=True, num_iteration=ref.best_iteration)
    np.testing.assert_allclose(coord.score(val.design), theirs, rtol=0, atol=1e-10)
    # LightGBM's validation loss is gdmix's log loss of offset + score.
    total = v_offset + coord.score(val.design)
    assert diag["lightgbm_binary_logloss"] == pytest.approx(
        log_loss(vy, total, from_logits=True), rel=1e-9
    )


def test_fit_is_deterministic_and_state_round_trips(tables) -> None:
    train, _, _ = tables
    y, w = train["label"].to_numpy(float), np.ones(len(train))
    coord = _coordinate(train, {"numeric": ["x1", "x2"], "categorical": ["color"]})
    design = coord.design(train, "train")
    coord.fit(design, y, w, np.zeros(len(y)), l2=0.5)
    first, state = coord.score(design), coord.get_state()
    coord.fit(design, y, w, np.full(len(y), 0.3), l2=2.0)
    assert not np.array_equal(coord.score(design), first)
    coord.set_state(state)
    assert np.array_equal(coord.score(design), first) and coord.params == {"l2": 0.5}
    coord.fit(design, y, w, np.zeros(len(y)), l2=0.5)
    assert coord.model_string == state["model"]


@pytest.fixture(scope="module")
def mixed(tables) -> tuple[GDMixModel, GDMixModel]:
    """GBDT alone, and GBDT + per-user random effect (2 passes)."""
    train, validation, _ = tables
    features = {"numeric": ["x1", "x2"], "categorical": ["color"]}
    alone = gdmix.fit(_config(_gbdt(features)), train, validation)
    user = {"name": "per_user", "type": "random", "entity": "user", "l2": 1.0}
    both = gdmix.fit(
        _config(_gbdt(features), user, n_passes=2, early_stopping=False), train, validation
    )
    return alone, both


def test_gbdt_plus_random_effect_beats_gbdt_alone(tables, mixed) -> None:
    _, _, test = tables
    alone, both = mixed
    assert [(r["pass"], r["coordinate"]) for r in both.history] == [
        (1, "gbdt"), (1, "per_user"), (2, "gbdt"), (2, "per_user")
    ]  # fmt: skip
    auc_alone = alone.evaluate(test)["auc"]
    auc_both = both.evaluate(test)["auc"]
    assert auc_both > auc_alone + 0.02
    # The second pass retrains the trees against the random effect's scores.
    gbdt = both["gbdt"]
    assert gbdt.fitted and gbdt.booster.num_trees() > 0


def test_save_load_gives_identical_scores(tables, mixed, tmp_path: Path) -> None:
    _, _, test = tables
    _, model = mixed
    path = model.save(tmp_path / "model")
    assert {p.name for p in (path / "coordinates" / "gbdt").iterdir()} >= {
        "features.json", "model.txt", "gbdt.json"
    }  # fmt: skip
    loaded = GDMixModel.load(path)
    before, after = model.score(test), loaded.score(test)
    pd.testing.assert_frame_equal(before, after, check_exact=True)


def test_unseen_categorical_levels_are_missing(tables, mixed) -> None:
    _, _, test = tables
    _, model = mixed
    gbdt = model["gbdt"]
    rows = test.iloc[[0, 0, 0]].reset_index(drop=True)
    rows["color"] = ["purple", None, "red"]
    design = gbdt.design(rows, "scoring data")
    assert np.isnan(design[:2, 2]).all() and design[2, 2] == sorted(COLORS).index("red")
    scores = model.score(rows)["gbdt"].to_numpy()
    assert np.isfinite(scores).all()
    assert scores[0] == scores[1]  # an unseen level and a null are both missing


def test_categorical_feature_is_native(tables) -> None:
    rng = np.random.default_rng(5)
    n, n_levels = 6000, 40
    effect = rng.normal(0, 1.2, n_levels)
    level = rng.integers(0, n_levels, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-effect[level]))).astype(np.int64)
    frame = pd.DataFrame({"city": [f"c{v}" for v in level], "label": y})
    train, validation, test = _split(frame)
    model = gdmix.fit(_config(_gbdt({"categorical": ["city"]}, n_estimators=200)), train,
                      validation)  # fmt: skip
    oracle = roc_auc_score(test["label"], effect[level[len(train) + len(validation) :]])
    ours = model.evaluate(test)["auc"]
    assert ours > oracle - 0.02

    def decisions(node: dict[str, Any]) -> list[str]:
        if "decision_type" not in node:
            return []
        return [node["decision_type"], *decisions(node["left_child"]),
                *decisions(node["right_child"])]  # fmt: skip

    trees = model["gbdt"].booster.dump_model()["tree_info"]
    kinds = {d for t in trees for d in decisions(t["tree_structure"])}
    assert kinds == {"=="}  # categorical splits (a set of levels), not thresholds


def test_bags_are_sparse_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    words = [f"w{i}" for i in range(30)]
    weights = dict(zip(words, rng.normal(0, 1.5, len(words)), strict=True))
    bags, logit = [], np.zeros(n)
    for i in range(n):
        chosen = rng.choice(words, 3, replace=False)
        bags.append([{"name": "kw", "term": w, "value": 1.0} for w in chosen])
        logit[i] = sum(weights[w] for w in chosen)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame({"x1": rng.normal(size=n), "kw": bags, "label": y})
    train, validation, test = _split(frame)
    config = _config(_gbdt({"numeric": ["x1"], "bags": ["kw"]}, n_estimators=300))
    model = gdmix.fit(config, train, validation)
    gbdt = model["gbdt"]
    design = gbdt.design(test, "test")
    assert design.shape == (len(test), 1 + len(words)) and hasattr(design, "indptr")
    assert model.evaluate(test)["auc"] > 0.75
    loaded = GDMixModel.load(model.save(tmp_path / "m"))
    assert np.array_equal(loaded.score(test)["total"], model.score(test)["total"])
    assert gbdt.feature_importance()["feature"].iloc[0].startswith("kw[")


def test_nan_in_numeric_feature_is_a_data_error(tables) -> None:
    train, validation, test = tables
    bad = train.copy()
    bad.loc[7, "x2"] = np.nan
    config = _config(_gbdt(NUMERIC))
    with pytest.raises(DataError, match=r"column 'x2' has 1 NaN/inf value\(s\) \(first at row 7"):
        gdmix.fit(config, bad, validation)
    strings = train.assign(x1=train["x1"].astype(str))
    with pytest.raises(DataError, match="column 'x1' must be numeric"):
        gdmix.fit(config, strings, validation)
    model = gdmix.fit(config, train, validation)
    with pytest.raises(DataError, match="scoring data, coordinate 'gbdt': column 'x2'"):
        model.score(test.assign(x2=np.inf))


def test_bad_settings_are_config_errors(tables, tmp_path: Path) -> None:
    train, validation, _ = tables
    with pytest.raises(ConfigError, match="needs at least one feature"):
        gdmix.fit(_config(_gbdt({})), train, validation)
    with pytest.raises(ConfigError, match=r"'params\.objective' of a gbdt coordinate must be"):
        gdmix.fit(_config(_gbdt(NUMERIC, params={"objective": "regression"})), train)
    model = gdmix.fit(_config(_gbdt(NUMERIC, n_estimators=5)), train)
    path = model.save(tmp_path / "m")
    (path / "coordinates" / "gbdt" / "model.txt").write_text("not a model")
    with pytest.raises(ModelDirectoryError, match=r"model\.txt is not a LightGBM model"):
        GDMixModel.load(path)


def test_locked_gbdt_is_scored_not_retrained(tables, mixed, tmp_path: Path) -> None:
    train, validation, test = tables
    _, model = mixed
    path = model.save(tmp_path / "model")
    features = {"numeric": ["x1", "x2"], "categorical": ["color"]}
    locked = _gbdt(features, locked=True, init_model=str(path))
    user = {"name": "per_user", "type": "random", "entity": "user", "l2": 3.0}
    refreshed = gdmix.fit(_config(locked, user), train, validation)
    assert [r["coordinate"] for r in refreshed.history] == ["per_user"]
    np.testing.assert_array_equal(refreshed.score(test)["gbdt"], model.score(test)["gbdt"])


def test_l2_list_is_searched_on_validation(tables) -> None:
    train, validation, _ = tables
    model = gdmix.fit(_config(_gbdt(NUMERIC, l2=[0.0, 50.0])), train, validation)
    tried = [r for r in model.history if r["coordinate"] == "gbdt"]
    assert [r["params"]["l2"] for r in tried] == [50.0, 0.0]
    best = max(tried, key=lambda r: r["validation_auc"])
    assert model["gbdt"].params == best["params"]
    assert model.metrics["validation"]["auc"] == pytest.approx(best["validation_auc"], abs=1e-12)

"""gdmix.refit and ``gdmix train --refit-on``: a refit equals a config written by hand with
the values validation chose, read from the source model's history."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import gdmix
from gdmix.cli import main
from gdmix.config import parse_config
from gdmix.errors import ConfigError


def _frame(seed: int, n: int) -> tuple[pd.DataFrame, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 30, n)
    bias = np.random.default_rng(99).normal(0, 1, 30)
    X = sp.random(n, 12, density=0.3, random_state=seed, format="csr")
    w = np.random.default_rng(98).normal(0, 1, 12)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    logit = 0.8 * x1 - 0.4 * x2 + bias[user] + X @ w
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame({"label": y, "user": user, "x1": x1, "x2": x2}), X


def _config(fixed_l2, user_l2, n_passes: int, **training) -> gdmix.GDMixConfig:
    return parse_config(
        {
            "coordinates": [
                {"name": "g", "type": "fixed", "l2": fixed_l2,
                 "features": {"numeric": ["x1", "x2"]}},
                {"name": "u", "type": "random", "entity": "user", "l2": user_l2,
                 "features": {"numeric": ["x2"]}, "tol": 1e-12},
            ],
            "training": {"n_passes": n_passes, "progress": False, **training},
        }
    )  # fmt: skip


def _kept(model: gdmix.GDMixModel, name: str, pass_no: int) -> dict:
    """The history record kept for ``name`` in ``pass_no`` (read independently of
    ``metrics['params']``)."""
    (record,) = [r for r in model.history
                 if r["coordinate"] == name and r["pass"] == pass_no and r["selected"]]  # fmt: skip
    return record


def test_refit_equals_a_hand_built_config() -> None:
    train, _ = _frame(0, 1500)
    val, _ = _frame(1, 600)
    # min_delta 0.5 (of AUC) cannot be met by a second pass: it stops there, and the
    # best pass is the first one although three were allowed.
    source = gdmix.fit(_config([30.0, 0.3], [20.0, 0.5], 3, min_delta=0.5), train, val)
    assert source.metrics["best_pass"] == 1 and source.metrics["stopped"]["pass"] == 2
    chosen_g = _kept(source, "g", 1)["params"]["l2"]
    chosen_u = _kept(source, "u", 1)["params"]["l2"]
    both = pd.concat([train, val], ignore_index=True)
    refit = gdmix.refit(source, [train, val])
    hand = gdmix.fit(_config(chosen_g, chosen_u, 1, tol=0.0), both)
    np.testing.assert_allclose(refit["g"].coef, hand["g"].coef, rtol=0, atol=1e-12)
    assert refit["g"].intercept == pytest.approx(hand["g"].intercept, abs=1e-12)
    np.testing.assert_allclose(refit["u"].coef, hand["u"].coef, rtol=0, atol=1e-12)
    np.testing.assert_allclose(refit["u"].intercept, hand["u"].intercept, rtol=0, atol=1e-12)
    # The pass count matters: two passes give another model.
    two = gdmix.fit(_config(chosen_g, chosen_u, 2, tol=0.0), both)
    assert np.abs(two["u"].intercept - refit["u"].intercept).max() > 1e-6
    # No validation set; the lineage records the source's choices.
    assert "validation" not in refit.metrics
    lineage = refit.lineage
    assert lineage["mode"] == "refit"
    assert lineage["data"]["train"]["rows"] == len(both)
    assert lineage["source"]["passes"] == 1
    assert lineage["source"]["params"]["g"] == {"l2": chosen_g}
    assert lineage["source"]["metrics"]["validation"] == source.metrics["validation"]


def test_refit_keeps_searched_values_of_a_saved_model(tmp_path) -> None:
    train, _ = _frame(2, 1200)
    val, _ = _frame(3, 500)
    source = gdmix.fit(_config([10.0, 0.1], 1.0, 2, l2_search="grid"), train, val)
    source.save(tmp_path / "src")
    plan = gdmix.refit_plan(gdmix.GDMixModel.load(tmp_path / "src"))
    assert plan.config.training.n_passes == source.metrics["best_pass"]
    assert plan.config.training.tol == 0.0
    assert plan.config.data.validation is None
    assert plan.config.coordinates[0].l2 == source.metrics["params"]["g"]["l2"]
    refit = gdmix.refit(tmp_path / "src", [train, val])
    refit.save(tmp_path / "refit")
    manifest = json.loads((tmp_path / "refit" / "manifest.json").read_text())
    assert manifest["lineage"]["mode"] == "refit"
    assert manifest["lineage"]["source"]["path"] == str((tmp_path / "src").resolve())


def test_refit_with_feature_matrices_stacks_them() -> None:
    train, X = _frame(4, 1000)
    val, Xv = _frame(5, 400)
    source = gdmix.fit(
        _config([5.0, 0.05], 1.0, 1), train, val, features={"g": X}, validation_features={"g": Xv}
    )
    names = [f"term{j}" for j in range(12)]
    named = gdmix.fit(
        _config([5.0, 0.05], 1.0, 1), train, val, features={"g": X},
        validation_features={"g": Xv}, feature_names={"g": names},
    )  # fmt: skip
    # The source's column names carry over to the refit (matrices in the same order).
    assert gdmix.refit(named, [train, val], features={"g": [X, Xv]})["g"].features.matrix == names
    refit = gdmix.refit(source, [train, val], features={"g": [X, Xv]})
    hand = gdmix.fit(
        _config(source.metrics["params"]["g"]["l2"], 1.0, 1, tol=0.0),
        pd.concat([train, val], ignore_index=True),
        features={"g": sp.vstack([X, Xv])},
    )
    np.testing.assert_allclose(refit["g"].coef, hand["g"].coef, rtol=0, atol=1e-12)
    assert refit["g"].features.matrix == [f"matrix[{j}]" for j in range(12)]


def test_refit_grows_the_trees_each_gbdt_pass_kept() -> None:
    pytest.importorskip("lightgbm")
    train, _ = _frame(6, 1500)
    val, _ = _frame(7, 600)
    gbdt = {"name": "g", "type": "gbdt", "features": {"numeric": ["x1", "x2"]},
            "n_estimators": 300, "learning_rate": 0.3, "early_stopping_rounds": 5,
            "params": {"num_threads": 1}}  # fmt: skip
    source = gdmix.fit(
        parse_config({"coordinates": [gbdt, {"name": "u", "type": "random", "entity": "user"}],
                      "training": {"n_passes": 2, "progress": False, "early_stopping": False}}),
        train, val,
    )  # fmt: skip
    passes = source.metrics["best_pass"]
    kept = [_kept(source, "g", p)["n_trees"] for p in range(1, passes + 1)]
    assert max(kept) < 300  # early stopping chose them
    refit = gdmix.refit(source, [train, val])
    grown = [r["n_trees"] for r in refit.history if r["coordinate"] == "g"]
    assert grown == kept
    assert refit["g"].config.n_estimators == 300  # the schedule is not the saved config
    assert refit.lineage["source"]["schedule"]["g"] == [{"n_estimators": k} for k in kept]
    # One pass of a GBDT alone equals a config with that many trees.
    alone = parse_config({"coordinates": [gbdt], "training": {"progress": False}})
    source = gdmix.fit(alone, train, val)
    n_trees = _kept(source, "g", 1)["n_trees"]
    refit = gdmix.refit(source, [train, val])
    hand_cfg = parse_config({"coordinates": [{**gbdt, "n_estimators": n_trees}],
                             "training": {"progress": False}})  # fmt: skip
    hand = gdmix.fit(hand_cfg, pd.concat([train, val], ignore_index=True))
    test, _ = _frame(8, 300)
    np.testing.assert_array_equal(refit.score(test)["total"], hand.score(test)["total"])


def test_cli_refit_on_train_and_validation(toy_job, capsys) -> None:
    config = toy_job.config_copy()
    config["coordinates"][0]["l2"] = [10.0, 0.1]
    path = toy_job.write_config(config)
    assert main(["train", "--config", str(path), "--refit-on", "train,validation"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["refit"]["on"] == ["train", "validation"]
    assert "test" in out and "validation" not in out
    manifest = json.loads((toy_job.model_dir / "manifest.json").read_text())
    lineage = manifest["lineage"]
    assert lineage["mode"] == "refit"
    assert lineage["data"]["train"]["rows"] == len(toy_job.train) + len(toy_job.validation)
    assert [p["path"] for p in lineage["data"]["train"]["parts"]] == [
        str(toy_job.train_path), str(toy_job.validation_path)
    ]  # fmt: skip
    chosen = lineage["source"]["params"]["global"]["l2"]
    assert manifest["coordinates"][0]["config"]["l2"] == chosen


@pytest.mark.parametrize("value", ["train,test", "", "validation,validation"])
def test_cli_refit_on_bad_tables_is_one_line(toy_job, capsys, value) -> None:
    code = main(["train", "--config", str(toy_job.config_path), "--refit-on", value])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--refit-on takes a comma-separated list" in err[0]
    assert not toy_job.model_dir.exists()


def test_refit_refuses_what_it_cannot_do() -> None:
    with pytest.raises(TypeError, match="model must be a GDMixModel"):
        gdmix.refit_plan("not a model")  # type: ignore[arg-type]
    train, _ = _frame(0, 300)
    model = gdmix.fit(_config(1.0, 1.0, 1), train)
    with pytest.raises(ConfigError, match="no data given"):
        gdmix.refit(model)
    with pytest.raises(TypeError, match="data must be a pandas DataFrame"):
        gdmix.refit(model, [train, 3])


def test_refit_trains_each_deep_pass_its_best_epochs() -> None:
    pytest.importorskip("torch")
    train, _ = _frame(9, 800)
    val, _ = _frame(10, 300)
    deep = {"name": "d", "type": "deep", "features": {"numeric": ["x1", "x2"]},
            "architecture": {"kind": "mlp", "hidden": [4]}, "max_epochs": 6, "patience": 1,
            "batch_size": 128, "learning_rate": 0.05, "device": "cpu"}  # fmt: skip
    config = parse_config(
        {"coordinates": [deep, {"name": "u", "type": "random", "entity": "user"}],
         "training": {"n_passes": 2, "progress": False, "early_stopping": False}}
    )  # fmt: skip
    source = gdmix.fit(config, train, val)
    passes = source.metrics["best_pass"]
    best = [_kept(source, "d", p)["best_epoch"] for p in range(1, passes + 1)]
    refit = gdmix.refit(source, [train, val])
    ran = [r["epochs"] for r in refit.history if r["coordinate"] == "d"]
    assert ran == best
    assert refit["d"].config.max_epochs == 6

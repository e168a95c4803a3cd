"""Input that used to give a silently wrong result now gives a clear error or warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gdmix
from gdmix.cli import main
from gdmix.config import load_config, parse_config
from gdmix.errors import ConfigError, DataError


def _config(**training) -> gdmix.GDMixConfig:
    return parse_config(
        {
            "coordinates": [
                {"name": "g", "type": "fixed", "features": {"numeric": ["x1", "x2"]}},
                {"name": "u", "type": "random", "entity": "user_id", "l2": 1.0},
            ],
            "training": {"progress": False, **training},
        }
    )


# -- entity ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train_as", "score_as"),
    [
        (np.float64, np.int64),
        (np.int64, np.float64),
        (np.int64, str),
        (str, np.int64),
        (np.int64, "Int64"),
    ],
)
def test_entity_ids_of_another_type_are_the_same_entities(toy_job, train_as, score_as):
    train, test = toy_job.train.copy(), toy_job.test.copy()
    reference = gdmix.fit(_config(), train).score(test)["u"]
    train["user_id"] = train["user_id"].astype(train_as)
    test["user_id"] = test["user_id"].astype(score_as)
    model = gdmix.fit(_config(), train)
    np.testing.assert_allclose(model.score(test)["u"], reference, atol=1e-10)
    assert model.evaluate(test)["coverage@u"] == 1.0
    # ... and through a save, with the key type kept in the table.
    assert model["u"].key_kind == ("str" if train_as is str else "int")


def test_training_coverage_counts_the_rows_of_entities_with_a_model(toy_job) -> None:
    rows = toy_job.train.groupby("user_id")["user_id"].transform("size")
    cut = int(rows.median())
    raw = _config().model_dump()
    raw["coordinates"][1]["min_rows"] = cut  # entities with fewer rows get no model
    model = gdmix.fit(parse_config(raw), toy_job.train)
    share = float((rows >= cut).mean())
    assert 0.0 < share < 1.0
    assert model["u"].train_coverage == pytest.approx(share, abs=1e-15)
    assert model.evaluate(toy_job.train)["coverage@u"] == pytest.approx(share, abs=1e-15)


def test_mixed_type_ids_are_one_key_type(toy_job) -> None:
    train = toy_job.train.copy()
    ids = train["user_id"].astype(object)
    ids[ids % 2 == 0] = ids[ids % 2 == 0].astype(str)  # "4" and 5 in one column
    train["user_id"] = ids
    model = gdmix.fit(_config(), train)
    assert model["u"].key_kind == "str"
    as_ints = gdmix.fit(_config(), toy_job.train)
    np.testing.assert_allclose(
        model.score(toy_job.test)["u"], as_ints.score(toy_job.test)["u"], atol=1e-10
    )


def test_ids_unknown_to_the_model_are_reported(toy_job, caplog) -> None:
    model = gdmix.fit(_config(), toy_job.train)
    test = toy_job.test.copy()
    test["user_id"] = "user-" + test["user_id"].astype(str)
    with caplog.at_level(logging.WARNING, logger="gdmix"):
        scores = model.score(test)
    assert (scores["u"] == 0).all()
    assert "random effect 'u' knows the 'user_id' of 0.0% of the rows (100.0% in training)" in (
        caplog.text
    )
    assert model.evaluate(test)["coverage@u"] == 0.0


def test_non_integer_numeric_ids_are_refused(toy_job) -> None:
    train = toy_job.train.copy()
    train["user_id"] = train["user_id"] + 0.5
    with pytest.raises(DataError, match="entity ids must be integers or strings"):
        gdmix.fit(_config(), train)


# -- names and roles -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["total", "offset", "uid", "label", ".", "..", ".hidden"])
def test_reserved_or_unsafe_coordinate_names(name: str) -> None:
    raw = {
        "data": {"uid": "uid"},
        "coordinates": [{"name": name, "type": "fixed", "features": {"numeric": ["x"]}}],
    }
    with pytest.raises(ConfigError, match=r"reserved|pattern|name"):
        parse_config(raw)


@pytest.mark.parametrize(
    ("coordinate", "match"),
    [
        ({"type": "fixed", "features": {"numeric": ["label"]}}, "label column"),
        ({"type": "fixed", "features": {"numeric": ["off"]}}, "offset column"),
        ({"type": "random", "entity": "user", "features": {"categorical": ["user"]}}, "entity"),
        ({"type": "fixed", "features": {"numeric": ["x"], "categorical": ["x"]}}, "twice"),
    ],
)
def test_features_that_leak_or_repeat_are_refused(coordinate, match) -> None:
    raw = {"data": {"offset": "off"}, "coordinates": [{"name": "c", **coordinate}]}
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_roles_must_name_distinct_columns() -> None:
    raw = {"data": {"label": "y", "weight": "y"}, "coordinates": [{"name": "c", "type": "fixed"}]}
    with pytest.raises(ConfigError, match="same column"):
        parse_config(raw)


# -- YAML ------------------------------------------------------------------------------


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_duplicate_yaml_keys_are_refused(tmp_path) -> None:
    path = _yaml(tmp_path, "coordinates:\n  - name: a\n    type: fixed\n    l2: 1\n    l2: 5\n")
    with pytest.raises(ConfigError, match="'l2' appears twice"):
        load_config(path)


def test_yaml_words_are_not_booleans(tmp_path) -> None:
    path = _yaml(
        tmp_path,
        "data: {offset: off, weight: yes, uid: on}\ncoordinates:\n"
        "  - {name: a, type: fixed, intercept: true}\n",
    )
    cfg = load_config(path)
    assert (cfg.data.offset, cfg.data.weight, cfg.data.uid) == ("off", "yes", "on")
    assert cfg.coordinates[0].intercept is True


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf", "1e13", "true"])
def test_non_finite_or_absurd_l2_is_refused(tmp_path, value) -> None:
    path = _yaml(tmp_path, f"coordinates:\n  - {{name: a, type: fixed, l2: {value}}}\n")
    with pytest.raises(ConfigError, match="l2"):
        load_config(path)


def test_absurd_offsets_are_refused(toy_job) -> None:
    train = toy_job.train.copy()
    train["off"] = 0.0
    train.loc[3, "off"] = 1e6
    cfg = _config().model_copy(update={"data": gdmix.DataConfig(offset="off")})
    with pytest.raises(DataError, match=r"offset column 'off' holds 1e\+06 at row 3"):
        gdmix.fit(cfg, train)


# -- tables of one job must agree ------------------------------------------------------


def test_feature_kinds_are_checked_across_tables(toy_job) -> None:
    cfg = parse_config(
        {
            "coordinates": [
                {"name": "g", "type": "fixed", "features": {"categorical": ["color"]}},
            ],
            "training": {"progress": False},
        }
    )
    validation = toy_job.validation.copy()
    validation["color"] = validation["color"].map({"red": 1, "green": 2, "blue": 3})
    with pytest.raises(DataError, match=r"'color' holds number values .* string values"):
        gdmix.fit(cfg, toy_job.train, validation)
    model = gdmix.fit(cfg, toy_job.train)
    with pytest.raises(DataError, match="'color'"):
        model.score(validation)
    saved = gdmix.GDMixModel.load(model.save(toy_job.root / "m"))
    with pytest.raises(DataError, match="'color'"):
        saved.score(validation)


# -- locked and warm-started coordinates -----------------------------------------------


def test_locked_coordinate_must_match_the_saved_one(toy_job, trained_toy_model) -> None:
    config = toy_job.config_copy()
    config["coordinates"][1].update(locked=True, init_model=str(trained_toy_model),
                                    entity="item_id")  # fmt: skip
    with pytest.raises(ConfigError, match="'entity' is 'item_id' here but 'user_id' in the saved"):
        load_config(toy_job.write_config(config))
        gdmix.fit(load_config(toy_job.write_config(config)))
    config["coordinates"][1].update(entity="user_id", features={"numeric": ["x2"]})
    with pytest.raises(ConfigError, match="'features'"):
        gdmix.fit(load_config(toy_job.write_config(config)))
    config["coordinates"][1].update(features={"numeric": ["x1"]}, locked=False)  # a warm start
    config["coordinates"][1]["features"] = {"numeric": ["x1", "x2"]}
    with pytest.raises(ConfigError, match="disagrees with the saved one"):
        gdmix.fit(load_config(toy_job.write_config(config)))


# -- convergence -----------------------------------------------------------------------


def test_separable_data_without_penalty_is_not_converged(caplog) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    frame = pd.DataFrame({"x": x, "label": (x > 0).astype(int)})
    cfg = parse_config(
        {
            "coordinates": [
                {"name": "g", "type": "fixed", "l2": 0, "features": {"numeric": ["x"]}}
            ],
            "training": {"progress": False},
        }
    )
    with caplog.at_level(logging.WARNING, logger="gdmix"):
        model = gdmix.fit(cfg, frame)
    record = model.history[-1]
    assert record["converged"] is False and record["diverged"] is True
    assert "running off" in caplog.text


def test_random_effect_without_penalty_reports_runaway_entities(toy_job, caplog) -> None:
    train = toy_job.train.copy()
    train.loc[train["user_id"] == 3, "label"] = 1  # one user with only positive labels
    cfg = parse_config(
        {
            "coordinates": [{"name": "u", "type": "random", "entity": "user_id", "l2": 0}],
            "training": {"progress": False},
        }
    )
    with caplog.at_level(logging.WARNING, logger="gdmix"):
        model = gdmix.fit(cfg, train)
    assert model.history[-1]["converged"] is False
    assert "'u'" in caplog.text


def test_coordinate_descent_stops_on_its_own_without_validation(toy_job) -> None:
    config = _config(n_passes=50)
    model = gdmix.fit(config, toy_job.train)
    stopped = model.metrics["stopped"]
    assert stopped["reason"] == "tol" and stopped["pass"] < 50
    assert stopped["objective_change"] < config.training.tol
    passes = {r["pass"] for r in model.history}
    assert max(passes) == stopped["pass"]
    # With tol 0 every pass runs.
    all_passes = gdmix.fit(_config(n_passes=4, tol=0.0), toy_job.train)
    assert all_passes.metrics["stopped"] == {"reason": "n_passes", "pass": 4}


# -- scoring needs only what it uses ---------------------------------------------------


def test_scoring_needs_only_the_columns_it_uses(toy_job) -> None:
    cfg = _config().model_copy(
        update={"data": gdmix.DataConfig(weight="w", uid="uid", label="label")}
    )
    train = toy_job.train.assign(w=1.0)
    model = gdmix.fit(cfg, train)
    full = model.score(toy_job.test.assign(w=1.0))
    bare = toy_job.test[["x1", "x2", "user_id"]]
    scores = model.score(bare)
    assert list(scores.columns) == ["g", "u", "total"]
    np.testing.assert_allclose(scores["total"], full["total"])
    assert full.columns[0] == "uid"  # copied when present
    metrics = model.evaluate(toy_job.test[["x1", "x2", "user_id", "label"]])
    assert metrics["auc"] > 0.6
    path = toy_job.write_table(bare, "bare.parquet")
    np.testing.assert_allclose(model.score(path)["total"], full["total"])


# -- files that are not what they say ---------------------------------------------------


def test_broken_csv_files_are_one_line_errors(toy_job, trained_toy_model, capsys) -> None:
    empty = toy_job.root / "empty.csv"
    empty.write_text("")
    latin = toy_job.root / "latin.csv"
    latin.write_bytes("x1,x2,user_id,item_id,color,label\n1,2,3,4,ro\xdfe,1\n".encode("latin-1"))
    header_only = toy_job.root / "header.csv"
    header_only.write_text("x1,x2,user_id,item_id,color,label\n")
    for path, match in ((empty, "empty"), (latin, "not UTF-8"), (header_only, "0 rows")):
        capsys.readouterr()
        argv = ["evaluate", "--model", str(trained_toy_model), "--data", str(path)]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err


def test_wrong_argument_types_in_the_api(toy_job) -> None:
    with pytest.raises(TypeError, match="GDMixConfig"):
        gdmix.fit({"coordinates": []}, toy_job.train)
    with pytest.raises(TypeError, match="DataFrame, a pyarrow Table, or the path"):
        gdmix.fit(_config(), 42)
    model = gdmix.fit(_config(), toy_job.train)
    with pytest.raises(TypeError, match="DataFrame, a pyarrow Table, or the path"):
        model.score([1, 2, 3])
    with pytest.raises(TypeError, match="callables"):
        gdmix.fit(_config(), toy_job.train, callbacks=["not callable"])

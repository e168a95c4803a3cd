"""Config schema: defaults, search grids, and messages that name the problem."""

import pytest

from gdmix.config import load_config, parse_config
from gdmix.errors import ConfigError

BASE = {"coordinates": [{"name": "fe", "type": "fixed"}]}


def _error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return str(info.value)


def test_defaults():
    cfg = parse_config({"coordinates": [{"name": "u", "type": "random", "entity": "user"}]})
    c = cfg.coordinates[0]
    assert (c.l2, c.intercept, c.intercept_l2, c.min_rows, c.max_rows) == (1.0, True, None, 1, None)
    assert cfg.training.n_passes == 1 and cfg.training.metric == "auc"
    assert cfg.data.label == "label"


def test_search_grid_orders_strongest_penalty_first():
    cfg = parse_config(
        {"coordinates": [{"name": "u", "type": "random", "entity": "e",
                          "l2": [1, 10, 0.1, 10], "intercept_l2": [0.5, 2]}]}
    )  # fmt: skip
    grid = cfg.coordinates[0].search_grid()
    assert [g["l2"] for g in grid] == [10, 10, 1, 1, 0.1, 0.1]
    assert [g["intercept_l2"] for g in grid[:2]] == [2, 0.5]
    fixed = parse_config({"coordinates": [{"name": "f", "type": "fixed", "l2": 3}]})
    assert fixed.coordinates[0].search_grid() == [{"l2": 3.0}]


def test_negative_l2_names_parameter_and_value():
    msg = _error({"coordinates": [{"name": "fe", "type": "fixed", "l2": -1}]})
    assert "l2" in msg and "must be >= 0" in msg and "Got -1 instead" in msg
    assert msg.count("Got") == 1
    msg = _error({"coordinates": [{"name": "u", "type": "random", "entity": "e",
                                   "intercept_l2": [1, -0.5]}]})  # fmt: skip
    assert "intercept_l2" in msg and "-0.5" in msg


def test_unknown_keys_are_rejected_at_every_level():
    assert "'bogus': unknown key" in _error({**BASE, "bogus": 1})
    assert "training.n_pass': unknown key" in _error({**BASE, "training": {"n_pass": 2}})
    msg = _error({"coordinates": [{"name": "fe", "type": "fixed", "features": {"numbers": []}}]})
    assert "features.numbers': unknown key" in msg


def test_type_is_required_and_checked():
    assert "'type' must be one of" in _error({"coordinates": [{"name": "x"}]})
    assert "Got 'bogus'" in _error({"coordinates": [{"name": "x", "type": "bogus"}]})


def test_other_rules():
    assert "unique" in _error({"coordinates": [{"name": "a", "type": "fixed"}] * 2})
    assert "reserved" in _error({"coordinates": [{"name": "total", "type": "fixed"}]})
    assert "init_model" in _error({"coordinates": [{"name": "a", "type": "fixed", "locked": True}]})
    assert "entity" in _error({"coordinates": [{"name": "a", "type": "random"}]})
    assert "at least 1" in _error({"coordinates": []})
    assert "n_passes" in _error({**BASE, "training": {"n_passes": 0}})
    assert "metric" in _error({**BASE, "training": {"metric": "accuracy"}})
    assert "min_rows" in _error(
        {"coordinates": [{"name": "a", "type": "random", "entity": "e", "min_rows": 0}]}
    )


def test_load_config_resolves_paths_against_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "job.yaml"
    path.write_text(
        "data: {train: t.parquet, validation: /abs/v.parquet}\n"
        "coordinates: [{name: fe, type: fixed, locked: true, init_model: ../m}]\n"
        "output: out\n"
    )
    cfg = load_config(path)
    assert cfg.data.train == str(tmp_path / "sub" / "t.parquet")
    assert cfg.data.validation == "/abs/v.parquet"
    assert cfg.coordinates[0].init_model == str(tmp_path / "sub" / "../m")
    assert cfg.output == str(tmp_path / "sub" / "out")


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)

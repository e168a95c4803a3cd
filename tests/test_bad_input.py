"""Bad input through the command line: exit status 2, one line on stderr, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gdmix.cli import main
from gdmix.effects.random_effect import RandomEffect
from gdmix.errors import OutputError
from gdmix.model import GDMixModel


def _hidden(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(".")}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single stderr line of a failed command (no traceback, nothing on stdout)."""
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("gdmix"), err
    assert out == ""
    return lines[0]


def _train_fails(
    job: Any,
    capsys: pytest.CaptureFixture[str],
    *,
    config: dict[str, Any] | None = None,
    train: pd.DataFrame | None = None,
) -> str:
    """Train a variant of the toy job that must fail; return its error line."""
    config = job.config_copy() if config is None else config
    if train is not None:
        config["data"]["train"] = str(job.write_table(train, "bad_train.parquet"))
    path = job.write_config(config, "bad.yaml")
    parent = job.model_dir.parent
    before = _hidden(parent)
    capsys.readouterr()
    assert main(["train", "--config", str(path)]) == 2
    line = _error_line(capsys)
    assert line.startswith("gdmix train: error:")
    assert not job.model_dir.exists()
    assert _hidden(parent) == before
    return line


# -- data ---------------------------------------------------------------------


def test_missing_feature_column(toy_job, capsys) -> None:
    config = toy_job.config_copy()
    config["coordinates"][0]["features"]["numeric"] = ["x1", "x2", "x3"]
    line = _train_fails(toy_job, capsys, config=config)
    assert "missing column" in line
    assert "'x3'" in line


def test_numeric_feature_holding_strings(toy_job, capsys) -> None:
    train = toy_job.train.copy()
    train["x1"] = train["x1"].map(lambda v: f"{v:.3f}")
    line = _train_fails(toy_job, capsys, train=train)
    assert "'x1'" in line
    assert "numeric" in line


def test_label_outside_zero_one(toy_job, capsys) -> None:
    train = toy_job.train.copy()
    train.loc[7, "label"] = 2
    line = _train_fails(toy_job, capsys, train=train)
    assert "label column 'label'" in line
    assert "0/1" in line
    assert "2" in line.split("0/1", 1)[1]


def test_nan_in_feature(toy_job, capsys) -> None:
    train = toy_job.train.copy()
    train.loc[11, "x2"] = np.nan
    line = _train_fails(toy_job, capsys, train=train)
    assert "'x2'" in line
    assert "NaN" in line
    assert "row 11" in line


def test_inf_in_offset_column(toy_job, capsys) -> None:
    train = toy_job.train.copy()
    train["off"] = 0.0
    train.loc[4, "off"] = np.inf
    config = toy_job.config_copy()
    config["data"]["offset"] = "off"
    line = _train_fails(toy_job, capsys, config=config, train=train)
    assert "'off'" in line
    assert "inf" in line


def test_null_entity_id(toy_job, capsys) -> None:
    train = toy_job.train.copy()
    train["user_id"] = train["user_id"].astype(object)
    train.loc[5, "user_id"] = None
    line = _train_fails(toy_job, capsys, train=train)
    assert "entity column 'user_id'" in line
    assert "null" in line


def test_empty_training_set(toy_job, capsys) -> None:
    line = _train_fails(toy_job, capsys, train=toy_job.train.iloc[:0])
    assert "training data" in line
    assert "empty" in line


def test_entity_column_does_not_exist(toy_job, capsys) -> None:
    config = toy_job.config_copy()
    config["coordinates"][1]["entity"] = "shop_id"
    line = _train_fails(toy_job, capsys, config=config)
    assert "'shop_id'" in line
    assert "missing column" in line


# -- config -------------------------------------------------------------------


def test_unknown_top_level_key(toy_job, capsys) -> None:
    config = toy_job.config_copy()
    config["n_epochs"] = 3
    line = _train_fails(toy_job, capsys, config=config)
    assert "'n_epochs'" in line
    assert "unknown key" in line


def test_unknown_nested_key(toy_job, capsys) -> None:
    config = toy_job.config_copy()
    config["coordinates"][0]["l3"] = 0.5
    line = _train_fails(toy_job, capsys, config=config)
    assert "coordinates.0" in line
    assert "l3'" in line
    assert "unknown key" in line


def test_negative_l2(toy_job, capsys) -> None:
    config = toy_job.config_copy()
    config["coordinates"][1]["l2"] = -1
    line = _train_fails(toy_job, capsys, config=config)
    assert "coordinates.1" in line
    assert "l2" in line
    assert "-1" in line


def test_config_file_does_not_exist(toy_job, capsys) -> None:
    missing = toy_job.root / "no_such.yaml"
    assert main(["train", "--config", str(missing)]) == 2
    line = _error_line(capsys)
    assert "cannot read config file" in line
    assert "no_such.yaml" in line
    assert not toy_job.model_dir.exists()


def test_config_not_yaml(toy_job, capsys) -> None:
    path = toy_job.root / "broken.yaml"
    path.write_text("data: [1, 2\ncoordinates: {\n")
    assert main(["train", "--config", str(path)]) == 2
    line = _error_line(capsys)
    assert "broken.yaml" in line
    assert "not valid YAML" in line
    assert not toy_job.model_dir.exists()


# -- model directories ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["empty", "other_files", "missing"])
def test_score_with_a_path_that_is_not_a_model(toy_job, capsys, kind: str) -> None:
    model = toy_job.root / "not_a_model"
    if kind != "missing":
        model.mkdir()
    if kind == "other_files":
        (model / "notes.txt").write_text("hello")
        (model / "coordinates").mkdir()
    output = toy_job.root / "scores.parquet"
    args = ["score", "--model", str(model), "--data", str(toy_job.test_path)]
    assert main([*args, "--output", str(output)]) == 2
    line = _error_line(capsys)
    assert line.startswith("gdmix score: error:")
    assert "not a gdmix model directory" in line
    assert str(model) in line
    assert ("no such folder" if kind == "missing" else "manifest.json") in line
    assert not output.exists()
    assert model.exists() == (kind != "missing")


def test_failed_save_keeps_the_old_model(toy_job, trained_toy_model, monkeypatch) -> None:
    model_dir = trained_toy_model
    parent = model_dir.parent
    before_hidden = _hidden(parent)
    files = ["global", "per_user", "per_item"]
    old_tables = {
        name: pd.read_parquet(model_dir / "coordinates" / name / "coefficients.parquet")
        for name in files
    }
    old_manifest = (model_dir / "manifest.json").read_text()

    model = GDMixModel.load(model_dir)
    model["global"].coef = model["global"].coef + 1.0  # a successful save would change it
    seen: list[Path] = []

    def failing_save(self: RandomEffect, folder: Path) -> None:
        # The fixed effect (the first coordinate) is already written by now.
        assert (folder.parent / "global" / "coefficients.parquet").is_file()
        seen.append(folder)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(RandomEffect, "_save_params", failing_save)
    with pytest.raises(OutputError, match="disk full"):
        model.save(model_dir)
    monkeypatch.undo()

    assert len(seen) == 1
    assert ".tmp-" in seen[0].parent.parent.name
    assert not seen[0].exists()
    assert not [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert _hidden(parent) == before_hidden
    assert (model_dir / "manifest.json").read_text() == old_manifest
    for name, table in old_tables.items():
        path = model_dir / "coordinates" / name / "coefficients.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(path), table)
    reloaded = GDMixModel.load(model_dir)
    np.testing.assert_array_equal(
        reloaded["global"].coef, old_tables["global"]["coefficient"].to_numpy()[1:]
    )
    np.testing.assert_array_equal(
        reloaded["per_user"].intercept, old_tables["per_user"]["intercept"].to_numpy()
    )

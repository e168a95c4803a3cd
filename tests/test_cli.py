"""End-to-end tests of the ``gdmix`` command line on the synthetic toy job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from gdmix.cli import main
from gdmix.model import GDMixModel

COORDINATES = ["global", "per_user", "per_item"]
ML_FILES = ["u.data", "u.item", "u.user"]


def _data_root() -> Path:
    env = os.environ.get("GDMIX_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def test_train_writes_model_and_prints_metrics(toy_job, capsys) -> None:
    assert main(["train", "--config", str(toy_job.config_path)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["model"] == str(toy_job.model_dir)
    assert report["validation"]["auc"] > 0.6
    assert report["test"]["auc"] > 0.6
    assert report["test"]["n_rows"] == len(toy_job.test)

    manifest = json.loads((toy_job.model_dir / "manifest.json").read_text())
    assert manifest["format"] == "gdmix-model"
    assert [c["name"] for c in manifest["coordinates"]] == COORDINATES
    for name in COORDINATES:
        folder = toy_job.model_dir / "coordinates" / name
        assert (folder / "coefficients.parquet").is_file()
        assert (folder / "features.json").is_file()
    # Nothing temporary left next to the model.
    assert not [p.name for p in toy_job.root.iterdir() if p.name.startswith(".")]

    # The fixed effect recovers the signs of the known coefficients (0.5, -0.3).
    coef = pd.read_parquet(toy_job.model_dir / "coordinates" / "global" / "coefficients.parquet")
    by_name = dict(zip(coef["feature"], coef["coefficient"], strict=True))
    assert by_name["x1"] > 0.1
    assert by_name["x2"] < -0.1
    assert {"color=red", "color=green", "color=blue"} <= set(by_name)
    # Every user and item of the training data has a random-effect model.
    users = pd.read_parquet(toy_job.model_dir / "coordinates" / "per_user" / "coefficients.parquet")
    items = pd.read_parquet(toy_job.model_dir / "coordinates" / "per_item" / "coefficients.parquet")
    assert set(users["entity_id"]) == set(toy_job.train["user_id"])
    assert set(items["entity_id"]) == set(toy_job.train["item_id"])
    # The per-item intercepts track the true item biases.
    true_bias = toy_job.truth["item_bias"][items["entity_id"].to_numpy()]
    assert np.corrcoef(true_bias, items["intercept"].to_numpy())[0, 1] > 0.7


def test_train_output_flag_overrides_config(toy_job, capsys) -> None:
    other = toy_job.root / "elsewhere" / "m"
    assert main(["-q", "train", "--config", str(toy_job.config_path), "--output", str(other)]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(other)
    assert (other / "manifest.json").is_file()
    assert not toy_job.model_dir.exists()


def test_score_parquet_and_csv(toy_job, trained_toy_model, capsys) -> None:
    out_parquet = toy_job.root / "out.parquet"
    assert (
        main(
            [
                "score",
                "--model",
                str(trained_toy_model),
                "--data",
                str(toy_job.test_path),
                "--output",
                str(out_parquet),
            ]
        )
        == 0
    )
    scores = pd.read_parquet(out_parquet)
    assert list(scores.columns) == ["uid", *COORDINATES, "total"]
    assert len(scores) == len(toy_job.test)
    np.testing.assert_array_equal(scores["uid"].to_numpy(), toy_job.test["uid"].to_numpy())
    np.testing.assert_allclose(
        scores["total"].to_numpy(), scores[COORDINATES].sum(axis=1).to_numpy(), rtol=0, atol=1e-12
    )
    # The same numbers as the library call.
    expected = GDMixModel.load(trained_toy_model).score(toy_job.test_path)
    pd.testing.assert_frame_equal(scores, expected)

    out_csv = toy_job.root / "x.csv"
    args = ["score", "--model", str(trained_toy_model), "--data", str(toy_job.test_path)]
    assert main([*args, "--output", str(out_csv)]) == 0
    assert out_csv.read_text().splitlines()[0] == "uid,global,per_user,per_item,total"
    csv = pd.read_csv(out_csv)
    assert len(csv) == len(toy_job.test)
    np.testing.assert_array_equal(csv["uid"].to_numpy(), toy_job.test["uid"].to_numpy())
    np.testing.assert_allclose(csv[[*COORDINATES, "total"]].to_numpy(), expected.iloc[:, 1:])
    leftovers = [p.name for p in toy_job.root.iterdir() if p.name.startswith(".")]
    assert not leftovers
    assert "Traceback" not in capsys.readouterr().err


def test_evaluate_matches_sklearn(toy_job, trained_toy_model, capsys) -> None:
    capsys.readouterr()
    args = ["evaluate", "--model", str(trained_toy_model), "--data", str(toy_job.test_path)]
    assert main([*args, "--group-by", "user_id"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"auc", "log_loss", "auc@user_id"} <= set(report)
    total = GDMixModel.load(trained_toy_model).score(toy_job.test_path)["total"].to_numpy()
    y = toy_job.test["label"].to_numpy()
    assert report["auc"] == pytest.approx(roc_auc_score(y, total), abs=1e-12)
    p = 1.0 / (1.0 + np.exp(-total))
    expected_log_loss = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    assert report["log_loss"] == pytest.approx(expected_log_loss, rel=1e-9)
    assert 0.5 < report["auc@user_id"] <= 1.0


def test_locked_coordinate_keeps_its_coefficients(toy_job, trained_toy_model, capsys) -> None:
    capsys.readouterr()
    config = toy_job.config_copy()
    config["coordinates"][0].update(locked=True, init_model=str(trained_toy_model))
    second = toy_job.root / "model_locked"
    config["output"] = str(second)
    path = toy_job.write_config(config, "locked.yaml")
    assert main(["-q", "train", "--config", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["validation"]["auc"] > 0.6

    def coefficients(model_dir: Path, name: str) -> pd.DataFrame:
        return pd.read_parquet(model_dir / "coordinates" / name / "coefficients.parquet")

    pd.testing.assert_frame_equal(
        coefficients(second, "global"), coefficients(trained_toy_model, "global")
    )
    first_model, second_model = GDMixModel.load(trained_toy_model), GDMixModel.load(second)
    np.testing.assert_array_equal(second_model["global"].coef, first_model["global"].coef)
    assert second_model["global"].intercept == first_model["global"].intercept
    # The random effects were trained again (on top of the locked fixed effect).
    assert (
        coefficients(second, "per_user").shape == coefficients(trained_toy_model, "per_user").shape
    )


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["train"], ["--config", "--output", "--n-threads", "--no-progress"]),
        (["score"], ["--model", "--data", "--output"]),
        (["evaluate"], ["--model", "--data", "--group-by"]),
        (["data"], ["movielens-100k"]),
        (
            ["data", "movielens-100k"],
            ["--output", "--data-dir", "--seed", "--no-download", "--overwrite"],
        ),
        ([], ["train", "score", "evaluate", "data", "--version", "--quiet"]),
    ],
)
def test_help(command: list[str], options: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gdmix")
    for option in options:
        assert option in out


def test_python_m_gdmix_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gdmix", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: gdmix" in proc.stdout
    for command in ("train", "score", "evaluate", "data"):
        assert command in proc.stdout


def test_data_movielens_100k(tmp_path: Path, capsys) -> None:
    root = _data_root()
    if not any(all((d / f).is_file() for f in ML_FILES) for d in (root, root / "ml-100k")):
        pytest.fail(f"MovieLens-100K files not found under {root}; set GDMIX_DATA_DIR")
    out = tmp_path / "ml100k"
    args = ["data", "movielens-100k", "--output", str(out), "--no-download"]
    assert main([*args, "--data-dir", str(root)]) == 0
    printed = capsys.readouterr().out
    rows = {"train": 72000, "validation": 8000, "test": 20000}
    for name, n in rows.items():
        path = out / f"{name}.parquet"
        assert f"{name}: {path}" in printed
        assert pq.read_metadata(path).num_rows == n
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.parquet" for n in rows)


def test_data_movielens_100k_keeps_existing_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ml100k"
    out.mkdir()
    (out / "test.parquet").write_text("my own test set")
    args = ["data", "movielens-100k", "--output", str(out), "--no-download"]
    capsys.readouterr()
    assert main([*args, "--data-dir", str(_data_root())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0], err
    assert (out / "test.parquet").read_text() == "my own test set"
    assert sorted(p.name for p in out.iterdir()) == ["test.parquet"]  # nothing written
    assert main([*args, "--data-dir", str(_data_root()), "--overwrite"]) == 0
    assert pq.read_metadata(out / "test.parquet").num_rows == 20000

"""Outputs are checked before any work and never destroy what gdmix did not write."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from gdmix.cli import main
from gdmix.data.io import check_output_file, write_table
from gdmix.errors import OutputError
from gdmix.fsutil import WORK_MARKER, fresh_work_folder
from gdmix.model import GDMixModel
from gdmix.model_dir import check_model_target


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert out == ""
    return lines[0]


def _train_argv(job, output: Path, *extra: str) -> list[str]:
    return ["-q", "train", "--config", str(job.config_path), "--output", str(output), *extra]


# -- model folders ---------------------------------------------------------------------


def test_training_into_a_folder_with_user_files_is_refused_before_training(
    toy_job, capsys, monkeypatch
) -> None:
    folder = toy_job.root / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    import gdmix.training

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(gdmix.training, "fit", no_training)
    line = _fails(capsys, _train_argv(toy_job, folder))
    assert "does not hold a gdmix model" in line
    line = _fails(capsys, _train_argv(toy_job, folder, "--overwrite"))  # never, even so
    assert "does not hold a gdmix model" in line
    assert (folder / "notes.txt").read_text() == "keep me"


def test_a_model_folder_with_extra_files_needs_overwrite(trained_toy_model, toy_job, capsys):
    (trained_toy_model / "README.txt").write_text("my notes about this model")
    line = _fails(capsys, _train_argv(toy_job, trained_toy_model))
    assert "README.txt" in line and "--overwrite" in line
    assert (trained_toy_model / "README.txt").exists()
    assert main(_train_argv(toy_job, trained_toy_model, "--overwrite")) == 0
    assert not (trained_toy_model / "README.txt").exists()
    assert (trained_toy_model / "manifest.json").is_file()


def test_a_model_folder_alone_is_replaced(trained_toy_model, toy_job) -> None:
    before = (trained_toy_model / "manifest.json").stat().st_mtime_ns
    assert main(_train_argv(toy_job, trained_toy_model)) == 0
    assert (trained_toy_model / "manifest.json").stat().st_mtime_ns != before


def test_unusable_model_paths_are_found_before_training(toy_job, capsys) -> None:
    a_file = toy_job.root / "model.txt"
    a_file.write_text("x")
    assert "is not a folder" in _fails(capsys, _train_argv(toy_job, a_file))
    assert "not a folder" in _fails(capsys, _train_argv(toy_job, a_file / "sub" / "model"))
    assert a_file.read_text() == "x"
    with pytest.raises(OutputError):
        check_model_target(a_file)


# -- score files -----------------------------------------------------------------------


def test_score_output_rules(trained_toy_model, toy_job, capsys) -> None:
    model, data = str(trained_toy_model), str(toy_job.test_path)
    score = ["-q", "score", "--model", model, "--data", data, "--output"]
    # Its own input, even with --overwrite.
    line = _fails(capsys, [*score, data, "--overwrite"])
    assert "input" in line
    assert len(pd.read_parquet(data)) == len(toy_job.test)
    # The model's own files, or a file inside another model folder, even with --overwrite.
    manifest = trained_toy_model / "manifest.json"
    text = manifest.read_text()
    assert "input" in _fails(capsys, [*score, str(manifest), "--overwrite"])
    other = GDMixModel.load(trained_toy_model).save(toy_job.root / "other")
    line = _fails(capsys, [*score, str(other / "manifest.json"), "--overwrite"])
    assert "model directory" in line
    line = _fails(capsys, [*score, str(other / "coordinates" / "scores.csv")])
    assert "model directory" in line
    assert manifest.read_text() == text == (other / "manifest.json").read_text()
    # An extension that names no format; a folder.
    assert ".parquet" in _fails(capsys, [*score, str(toy_job.root / "scores.txt")])
    assert "folder" in _fails(capsys, [*score, str(toy_job.root)])
    # An existing file needs --overwrite.
    out = toy_job.root / "scores.csv"
    out.write_text("precious\n")
    assert "--overwrite" in _fails(capsys, [*score, str(out)])
    assert out.read_text() == "precious\n"
    assert main([*score, str(out), "--overwrite"]) == 0
    assert list(pd.read_csv(out).columns)[-1] == "total"
    # The extension picks the format.
    pq_out = toy_job.root / "scores.parquet"
    assert main([*score, str(pq_out)]) == 0
    assert pq.read_table(pq_out).num_rows == len(toy_job.test)


def test_write_table_is_atomic_and_checked(tmp_path) -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    path = write_table(frame, tmp_path / "t.parquet")
    with pytest.raises(OutputError, match="exists"):
        write_table(frame, path, overwrite=False)
    with pytest.raises(OutputError, match="extension"):
        check_output_file(tmp_path / "t.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


# -- scratch folders -------------------------------------------------------------------


def test_scratch_folders_are_emptied_only_when_gdmix_made_them(tmp_path) -> None:
    user = tmp_path / "scores"
    user.mkdir()
    (user / "thesis.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        fresh_work_folder(user)
    assert (user / "thesis.txt").exists()
    ours = fresh_work_folder(tmp_path / "buckets")
    (ours / "bucket-00001.parquet").write_text("old")
    again = fresh_work_folder(ours)
    assert sorted(p.name for p in again.iterdir()) == [WORK_MARKER]


def test_streaming_refuses_a_work_folder_with_user_files(toy_job, tmp_path) -> None:
    from gdmix.config import DataConfig, parse_config
    from gdmix.engines.streaming import fit_random_effect_streaming

    work = tmp_path / "work"
    (work / "scores").mkdir(parents=True)
    (work / "scores" / "results.csv").write_text("keep")
    config = parse_config(
        {"coordinates": [{"name": "u", "type": "random", "entity": "user_id"}]}
    ).coordinates[0]
    with pytest.raises(OutputError, match="did not write"):
        fit_random_effect_streaming(
            toy_job.train_path, config, DataConfig(uid="uid"), tmp_path / "model",
            work_dir=work, progress=False,
        )  # fmt: skip
    assert (work / "scores" / "results.csv").read_text() == "keep"
    assert not (tmp_path / "model").exists()

"""model.score on Parquet reads and scores the table a batch at a time: same result."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from gdmix.data.scan import parquet_batches
from gdmix.errors import DataError
from gdmix.model import GDMixModel


def _write_parts(frame: pd.DataFrame, folder, sizes) -> None:
    folder.mkdir()
    start = 0
    for i, size in enumerate(sizes):
        frame.iloc[start : start + size].to_parquet(folder / f"part-{i:02d}.parquet", index=False)
        start += size
    assert start == len(frame)


@pytest.mark.parametrize("batch_rows", [1, 97, 450, 10_000])
def test_batched_scores_equal_whole_table_scores(trained_toy_model, toy_job, tmp_path, batch_rows):
    model = GDMixModel.load(trained_toy_model)
    test = toy_job.test
    folder = tmp_path / "parts"
    _write_parts(test, folder, [100, 0, 233, len(test) - 333])  # an empty file too
    whole = model.score(test)  # a DataFrame: scored in one piece
    batched = model.score(folder, batch_rows=batch_rows)
    pd.testing.assert_frame_equal(batched, whole)
    assert list(batched.columns) == ["uid", "global", "per_user", "per_item", "total"]
    assert np.array_equal(batched["uid"].to_numpy(), test["uid"].to_numpy())
    single = model.score(toy_job.test_path, batch_rows=batch_rows)  # one file
    pd.testing.assert_frame_equal(single, whole)


def test_batches_follow_the_files_row_order(toy_job, tmp_path):
    folder = tmp_path / "parts"
    _write_parts(toy_job.test, folder, [50, 300, len(toy_job.test) - 350])
    batches = parquet_batches(folder, ["uid", "x1", "color"], batch_rows=64)
    assert batches.n_rows == len(toy_job.test)
    frames = list(batches)
    assert all(len(f) >= 1 for f in frames)
    joined = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(joined, toy_job.test[["uid", "x1", "color"]])
    assert parquet_batches(toy_job.test, ["uid"]) is None  # a DataFrame is read whole
    assert parquet_batches(tmp_path / "missing.parquet", ["uid"]) is None
    with pytest.raises(ValueError, match="batch_rows"):
        parquet_batches(folder, ["uid"], batch_rows=0)


def test_coverage_warning_once_over_all_batches(trained_toy_model, toy_job, tmp_path, caplog):
    model = GDMixModel.load(trained_toy_model)
    test = toy_job.test.copy()
    test["user_id"] = test["user_id"] + 10_000  # ids the model has never seen
    path = tmp_path / "unseen.parquet"
    test.to_parquet(path, index=False)
    with caplog.at_level(logging.WARNING, logger="gdmix"):
        scores = model.score(path, batch_rows=100)
    warnings = [r.getMessage() for r in caplog.records if "per_user" in r.getMessage()]
    assert len(warnings) == 1 and "0.0% of the rows" in warnings[0]
    assert np.all(scores["per_user"] == 0.0)


def test_batched_scoring_errors(trained_toy_model, toy_job, tmp_path):
    model = GDMixModel.load(trained_toy_model)
    path = tmp_path / "no_x1.parquet"
    toy_job.test.drop(columns=["x1"]).to_parquet(path, index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['x1'\]"):
        model.score(path)
    empty = tmp_path / "empty.parquet"
    toy_job.test.iloc[:0].to_parquet(empty, index=False)
    with pytest.raises(DataError, match="empty"):
        model.score(empty)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match="cannot read"):
        model.score(bad)

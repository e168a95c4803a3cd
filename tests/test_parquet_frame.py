"""Parquet read batch by batch into one copy of the numeric data (gdmix.data.parquet_frame)
gives the frame pyarrow's own ``read_table(...).to_pandas()`` gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gdmix.data import parquet_frame
from gdmix.data.io import read_table
from gdmix.data.parquet_frame import plain_parquet_files, read_parquet_frame
from gdmix.hugepages import _compacts_on_advice, avoid_compaction_stalls


def _frame(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "x": rng.normal(size=n), "k": np.arange(n), "s": [f"e{i % 4}" for i in range(n)],
        "flag": np.arange(n) % 2 == 0, "i8": np.arange(n, dtype=np.int8),
        "f32": rng.normal(size=n).astype(np.float32), "y": rng.normal(size=n),
    })  # fmt: skip


def _files(tmp_path: Path) -> dict[str, Path]:
    df = _frame()
    out: dict[str, Path] = {}

    def put(name: str, frame: pd.DataFrame) -> None:
        out[name] = tmp_path / f"{name}.parquet"
        frame.to_parquet(out[name])

    put("plain", df)
    put("stored_range", df.iloc[3:])  # a RangeIndex starting at 3
    put("stored_index", df[df.x > 0])  # an index stored as a column
    put("nullable_int", df.astype({"k": "Int64"}))
    put("float_nulls", df.assign(x=df.x.where(df.x > 0)))
    out["int_nulls"] = tmp_path / "int_nulls.parquet"
    pq.write_table(pa.table({"k": pa.array([1, None, 3]), "x": [1.0, 2.0, 3.0]}), out["int_nulls"])
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(3):
        df.iloc[4 * i : 4 * (i + 1)].to_parquet(folder / f"part-{i}.parquet")
    (folder / "_SUCCESS").write_text("")
    out["folder"] = folder
    pq.write_to_dataset(pa.Table.from_pandas(df.assign(p=df.k % 3)), tmp_path / "hive",
                        partition_cols=["p"])  # fmt: skip
    out["hive"] = tmp_path / "hive"
    out["arrow_types"] = tmp_path / "arrow_types.parquet"
    pq.write_table(
        pa.table({
            "x": np.arange(5.0), "cat": pa.array(list("aabba")).dictionary_encode(),
            "lst": pa.array([[1], [2], [], [3, 4], None]),
        }),
        out["arrow_types"],
    )  # fmt: skip
    return out


FAST = ["plain", "stored_range", "nullable_int", "float_nulls", "folder", "hive", "arrow_types"]


@pytest.mark.parametrize("case", FAST)
@pytest.mark.parametrize("columns", [None, ["x"], ["y", "x", "s"]])
def test_the_frame_equals_pyarrows(tmp_path, case, columns):
    path = _files(tmp_path)[case]
    if case == "arrow_types" and columns is not None:  # its only numeric column
        columns = ["x"]
    expected = pq.read_table(path, columns=columns).to_pandas()
    got = read_parquet_frame(path, columns)
    assert got is not None
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(read_table(path, columns), expected)


@pytest.mark.parametrize("case", ["stored_index", "int_nulls"])
def test_what_it_cannot_promise_is_read_the_usual_way(tmp_path, case):
    path = _files(tmp_path)[case]
    assert read_parquet_frame(path, None) is None
    pd.testing.assert_frame_equal(read_table(path), pq.read_table(path).to_pandas())


def test_numeric_columns_are_one_block_so_a_design_is_a_view(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_frame, "BATCH_ROWS", 5)  # several batches per file
    path = _files(tmp_path)["folder"]
    frame = read_table(path)
    expected = pq.read_table(path).to_pandas()
    pd.testing.assert_frame_equal(frame, expected)
    block = frame[["x", "y"]].to_numpy()
    assert np.shares_memory(block, frame["x"].to_numpy())
    np.testing.assert_array_equal(block, expected[["x", "y"]].to_numpy())


def test_plain_parquet_files_are_the_files_pyarrow_reads(tmp_path):
    files = _files(tmp_path)
    folder = sorted(files["folder"].glob("part-*.parquet"))
    assert plain_parquet_files(str(files["folder"])) == folder  # "_SUCCESS" skipped
    assert plain_parquet_files([files["plain"], files["folder"]]) == [files["plain"], *folder]
    for other in (files["hive"], tmp_path / "missing.parquet", "s3://bucket/data", _frame()):
        assert plain_parquet_files(other) is None  # their own reader handles them
    glued = pd.concat([pd.read_parquet(f) for f in plain_parquet_files(files["folder"])])
    pd.testing.assert_frame_equal(glued.reset_index(drop=True), read_table(files["folder"]))


def test_huge_page_advice_is_dropped_only_where_the_kernel_compacts_for_it(tmp_path, monkeypatch):
    assert _compacts_on_advice("always defer defer+madvise [madvise] never\n")
    assert _compacts_on_advice("always defer [defer+madvise] madvise never")
    assert not _compacts_on_advice("always [defer] defer+madvise madvise never")
    assert not _compacts_on_advice("[always] defer defer+madvise madvise never")
    calls: list[bool] = []
    core = getattr(np, "_core", None) or np.core
    monkeypatch.setattr(core.multiarray, "_set_madvise_hugepage", calls.append, raising=False)
    setting = tmp_path / "defrag"
    setting.write_text("always [defer] defer+madvise madvise never\n")
    assert avoid_compaction_stalls(setting) is False
    assert avoid_compaction_stalls(tmp_path / "missing") is False
    setting.write_text("always defer defer+madvise [madvise] never\n")
    monkeypatch.setenv("GDMIX_NUMPY_HUGEPAGES", "1")
    assert avoid_compaction_stalls(setting) is False
    assert calls == []
    monkeypatch.delenv("GDMIX_NUMPY_HUGEPAGES")
    assert avoid_compaction_stalls(setting) is True
    assert calls == [False]


def test_float_columns_are_checked_finite_as_they_are_copied(tmp_path, monkeypatch):
    """Within a training call's block the copy records which float columns are finite
    (NaN or inf in any batch, or a null, leaves a column unrecorded); outside one
    nothing is recorded."""
    from gdmix.data.schema import known_finite, shared_finite_checks

    monkeypatch.setattr(parquet_frame, "BATCH_ROWS", 5)  # several batches per file
    df = _frame(40)
    df.loc[33, "y"] = np.inf  # in the last batch only
    df.loc[2, "f32"] = np.nan
    df["z"] = df.x.where(df.index != 7)  # a null
    df["w"] = -df.x
    path = tmp_path / "t.parquet"
    pa_table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(pa_table.set_column(pa_table.schema.get_field_index("z"), "z",
                                       pa.array(df.z, from_pandas=True)), path)  # fmt: skip
    with shared_finite_checks():
        frame = read_table(path)
        assert known_finite(frame, ["x", "w"], np.float64)
        for column in ("y", "f32", "z"):
            assert not known_finite(frame, [column], np.float64)
        assert not known_finite(frame, ["x"], np.float32)  # float32 might overflow
    pd.testing.assert_frame_equal(frame, pq.read_table(path).to_pandas())
    assert frame.z.isna().sum() == 1 and np.isinf(frame.y).sum() == 1
    assert not known_finite(read_table(path), ["x"], np.float64)  # no block: not recorded

    df = _frame(40)  # a finite float32 column stays finite as float64
    df.to_parquet(path)
    with shared_finite_checks():
        frame = read_table(path)
        assert known_finite(frame, ["f32"], np.float32)
        assert known_finite(frame, ["f32"], np.float64)


def test_training_from_files_still_rejects_non_finite_features(tmp_path):
    """What the read records does not let NaN or inf through: ``fit`` on files reports
    the column as it does for a DataFrame."""
    import gdmix
    from gdmix.config import parse_config
    from gdmix.errors import DataError

    rng = np.random.default_rng(3)
    n = 300
    frame = pd.DataFrame({
        "x": rng.normal(size=n), "v": rng.normal(size=n),
        "user": rng.integers(0, 10, n), "label": rng.integers(0, 2, n),
    })  # fmt: skip
    config = parse_config({
        "coordinates": [
            {"name": "fe", "type": "fixed", "features": {"numeric": ["x", "v"]}},
            {"name": "u", "type": "random", "entity": "user", "features": {"numeric": ["v"]}},
        ],
        "training": {"n_passes": 1, "progress": False},
    })  # fmt: skip
    path = tmp_path / "train.parquet"
    frame.to_parquet(path)
    gdmix.fit(config, path)  # finite: trains
    for bad in (np.nan, np.inf):
        frame.loc[250, "v"] = bad
        frame.to_parquet(path)
        with pytest.raises(DataError, match="'v'"):
            gdmix.fit(config, path)

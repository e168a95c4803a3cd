"""Tests of gdmix.data.features.FeatureIndex against hand-built design matrices."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from gdmix.config import FeatureConfig
from gdmix.data.features import FeatureIndex, scatter_rows
from gdmix.data.schema import first_non_finite
from gdmix.errors import DataError

SPEC = FeatureConfig(numeric=["x1", "x2"], categorical=["c"], bags=["bag"])
NAMES = ["x1", "x2", "c=a", "c=b", "bag[g,a]", "bag[g,b]", "bag[h,]"]


def _item(name, term, value):
    return {"name": name, "term": term, "value": value}


def _train():
    return pd.DataFrame(
        {
            "x1": [1.0, 0.0, 2.5, -1.0],
            "x2": [0, 3, 1, 0],
            "c": ["b", None, "a", "b"],
            "bag": [
                [_item("g", "a", 1.5)],
                [],
                [_item("g", "b", 2.0), _item("h", "", -1.0)],
                [_item("g", "a", 0.5), _item("g", "a", 0.25)],
            ],
            "unused": ["p", "q", "r", "s"],
        }
    )


# Columns: x1, x2, c=a, c=b, bag[g,a], bag[g,b], bag[h,]
EXPECTED_TRAIN = np.array(
    [
        [1.0, 0.0, 0.0, 1.0, 1.5, 0.0, 0.0],
        [0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [2.5, 1.0, 1.0, 0.0, 0.0, 2.0, -1.0],
        [-1.0, 0.0, 0.0, 1.0, 0.75, 0.0, 0.0],  # repeated key in a row: values add up
    ]
)


def _score_frame():
    """Unseen categorical level, null level, unseen bag keys, a null bag."""
    return pd.DataFrame(
        {
            "x1": [0.5, -2.0, 0.0],
            "x2": [1.0, 0.0, 7.0],
            "c": ["z", "a", None],
            "bag": [
                [_item("g", "zz", 9.0), _item("h", "", 4.0)],
                [_item("new", "a", 1.0)],
                None,
            ],
        }
    )


EXPECTED_SCORE = np.array(
    [
        [0.5, 1.0, 0.0, 0.0, 0.0, 0.0, 4.0],
        [-2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)


def _check(index, frame, expected):
    mat = index.transform(frame, "test")
    assert sp.isspmatrix_csr(mat) or isinstance(mat, sp.csr_array)
    assert mat.dtype == np.float64
    assert mat.shape == expected.shape
    np.testing.assert_array_equal(mat.toarray(), expected)
    assert mat.nnz == np.count_nonzero(expected)  # no explicit zeros stored
    return mat


def test_build_and_transform():
    index = FeatureIndex.build(_train(), SPEC, "test")
    assert index.numeric == ["x1", "x2"]
    assert index.categorical == {"c": ["a", "b"]}
    assert index.n_features == 7
    assert index.feature_names() == NAMES
    assert index.columns() == ["x1", "x2", "c", "bag"]
    _check(index, _train(), EXPECTED_TRAIN)
    _check(index, _score_frame(), EXPECTED_SCORE)


def test_transform_ignores_extra_columns_and_row_order():
    index = FeatureIndex.build(_train(), SPEC, "test")
    frame = _train().iloc[::-1].reset_index(drop=True)
    _check(index, frame, EXPECTED_TRAIN[::-1])


def test_dict_round_trip_through_json():
    index = FeatureIndex.build(_train(), SPEC, "test")
    raw = json.loads(json.dumps(index.to_dict()))
    again = FeatureIndex.from_dict(raw)
    assert again == index
    assert again.feature_names() == NAMES
    _check(again, _train(), EXPECTED_TRAIN)
    _check(again, _score_frame(), EXPECTED_SCORE)


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pandas(_train(), preserve_index=False), path)
    table = pq.read_table(path)
    assert pa.types.is_list(table.schema.field("bag").type)
    frame = table.to_pandas()
    index = FeatureIndex.build(frame, SPEC, "test")
    assert index.feature_names() == NAMES
    _check(index, frame, EXPECTED_TRAIN)
    # An index built in memory encodes the Parquet-read table the same way.
    _check(FeatureIndex.build(_train(), SPEC, "test"), frame, EXPECTED_TRAIN)
    score = tmp_path / "score.parquet"
    pq.write_table(pa.Table.from_pandas(_score_frame(), preserve_index=False), score)
    _check(index, pq.read_table(score).to_pandas(), EXPECTED_SCORE)


def test_bag_without_term_field():
    frame = pd.DataFrame({"bag": [[{"name": "u", "value": 2.0}], [{"name": "v", "value": 3.0}]]})
    index = FeatureIndex.build(frame, FeatureConfig(bags=["bag"]), "test")
    assert index.feature_names() == ["bag[u,]", "bag[v,]"]
    _check(index, frame, np.array([[2.0, 0.0], [0.0, 3.0]]))


def test_empty_spec_and_empty_frame():
    index = FeatureIndex.build(_train(), FeatureConfig(), "test")
    assert index.n_features == 0
    assert index.transform(_train(), "test").shape == (4, 0)
    index = FeatureIndex.build(_train(), FeatureConfig(numeric=["x1"], categorical=["c"]), "t")
    assert index.transform(_train().iloc[:0], "test").shape == (0, 3)


def test_bag_of_empty_lists_encodes_to_zeros():
    index = FeatureIndex.build(_train(), SPEC, "test")
    frame = _train().assign(bag=[[], [], [], []])
    expected = EXPECTED_TRAIN.copy()
    expected[:, 4:] = 0.0
    _check(index, frame, expected)


def test_all_null_bag_column_from_parquet(tmp_path):
    item = pa.struct([("name", pa.string()), ("term", pa.string()), ("value", pa.float64())])
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"bag": pa.array([None, None], type=pa.list_(item))}), path)
    frame = pq.read_table(path).to_pandas()
    index = FeatureIndex.build(_train(), FeatureConfig(bags=["bag"]), "test")
    _check(index, frame, np.zeros((2, 3)))


def test_integer_categorical_with_nulls_in_training():
    # Training data with a null makes pandas hold the ints as float64 ("1.0", "2.0"),
    # scoring data without nulls holds int64 ("1", "2"): the same levels must match.
    train = pd.DataFrame({"k": [1, None, 2]})
    index = FeatureIndex.build(train, FeatureConfig(categorical=["k"]), "test")
    _check(index, pd.DataFrame({"k": [2, 1, 3]}), np.array([[0.0, 1.0], [1.0, 0.0], [0, 0]]))


def test_random_numeric_and_categorical_against_dense():
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n) * (rng.uniform(size=n) < 0.5),
            "b": rng.integers(-3, 4, size=n),
            "k": rng.choice(["x", "y", "w", "v"], size=n),
        }
    )
    index = FeatureIndex.build(frame, FeatureConfig(numeric=["a", "b"], categorical=["k"]), "t")
    levels = ["v", "w", "x", "y"]
    onehot = (frame["k"].to_numpy()[:, None] == np.array(levels)[None, :]).astype(float)
    expected = np.column_stack([frame["a"], frame["b"].astype(float), onehot])
    _check(index, frame, expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_numeric_raises(bad):
    index = FeatureIndex.build(_train(), SPEC, "test")
    frame = _train()
    frame.loc[2, "x1"] = bad
    with pytest.raises(DataError, match="x1"):
        index.transform(frame, "test")


def test_string_column_as_numeric_raises():
    frame = _train().assign(x2=["1", "2", "3", "4"])
    index = FeatureIndex.build(_train(), SPEC, "test")
    with pytest.raises(DataError, match="x2"):
        index.transform(frame, "test")


def test_missing_column_raises():
    frame = _train().drop(columns=["c"])
    with pytest.raises(DataError, match="'c'"):
        FeatureIndex.build(frame, SPEC, "test")
    index = FeatureIndex.build(_train(), SPEC, "test")
    with pytest.raises(DataError, match="'c'"):
        index.transform(frame, "test")
    with pytest.raises(DataError, match="bag"):
        index.transform(_train().drop(columns=["bag"]), "test")


@pytest.mark.parametrize(
    "values",
    [[1.0, 2.0, 3.0, 4.0], [[1.0], [2.0], [], []], [[_item("g", "a", np.nan)], [], [], []]],
)
def test_bad_bag_column_raises(values):
    frame = _train().assign(bag=values)
    with pytest.raises(DataError, match="bag"):
        FeatureIndex.build(frame, SPEC, "test")


def _numeric_frame(n=500, seed=0):
    rng = np.random.default_rng(seed)
    data = {f"x{j}": rng.normal(size=n) * (rng.uniform(size=n) < 0.7) for j in range(4)}
    data["flag"] = rng.uniform(size=n) < 0.5  # booleans are numbers too
    data["k"] = rng.integers(-3, 4, size=n)
    return pd.DataFrame(data)


def test_encode_numeric_shard_is_dense_and_equals_transform(tmp_path):
    frame = _numeric_frame()
    spec = FeatureConfig(numeric=["x2", "x0", "flag", "k"])
    index = FeatureIndex.build(frame, spec, "t")
    assert index.dense
    block = index.encode(frame, "t")
    expected = np.column_stack([frame["x2"], frame["x0"], frame["flag"], frame["k"]]).astype(float)
    assert isinstance(block, np.ndarray) and block.dtype == np.float64
    np.testing.assert_array_equal(block, expected)
    np.testing.assert_array_equal(index.transform(frame, "t").toarray(), expected)
    single = index.encode(frame, "t", dtype=np.float32)
    assert single.dtype == np.float32
    np.testing.assert_array_equal(single, expected.astype(np.float32))


def test_encode_reads_an_arrow_float_block_without_copying(tmp_path):
    path = tmp_path / "t.parquet"
    frame = _numeric_frame()[["x0", "x1", "x2", "x3"]]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    table = pq.read_table(path).to_pandas()
    index = FeatureIndex.build(table, FeatureConfig(numeric=["x0", "x1", "x2", "x3"]), "t")
    block = index.encode(table, "t")
    assert np.shares_memory(block, table["x0"].to_numpy())
    assert not block.flags.writeable
    np.testing.assert_array_equal(block, frame.to_numpy())


@pytest.mark.parametrize("numeric_only", [True, False])
def test_encode_in_another_row_order(numeric_only):
    frame = _numeric_frame(seed=3).assign(c=lambda f: np.where(f["x0"] > 0, "a", "b"))
    spec = FeatureConfig(numeric=["x0", "x1", "k"], categorical=[] if numeric_only else ["c"])
    index = FeatureIndex.build(frame, spec, "t")
    order = np.random.default_rng(4).permutation(len(frame))
    positions = np.empty_like(order)
    positions[order] = np.arange(len(order))
    expected = index.transform(frame, "t").toarray()[order]
    for kwargs in ({"order": order}, {"positions": positions},
                   {"order": order, "positions": positions}):  # fmt: skip
        got = index.encode(frame, "t", **kwargs)
        assert isinstance(got, np.ndarray) == numeric_only
        dense = got if numeric_only else got.toarray()
        np.testing.assert_array_equal(dense, expected)
        if numeric_only:
            assert got.flags.c_contiguous


def test_scatter_rows_places_every_row():
    src = np.asfortranarray(np.arange(60, dtype=np.float64).reshape(20, 3))
    positions = np.random.default_rng(0).permutation(20)
    out = scatter_rows(src, positions)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out[positions], src)
    with pytest.raises(ValueError, match="positions"):
        scatter_rows(src, positions[:5])


def test_encode_checks_values_and_dtype():
    frame = _numeric_frame()
    index = FeatureIndex.build(frame, FeatureConfig(numeric=["x0", "x1"]), "t")
    bad = frame.assign(x1=frame["x1"].where(frame.index != 7, np.nan))
    with pytest.raises(DataError, match=r"'x1' has 1 NaN/inf value.*row 7"):
        index.encode(bad, "t")
    huge = frame.assign(x0=frame["x0"].where(frame.index != 3, 1e300))
    assert np.isfinite(index.encode(huge, "t")).all()
    with pytest.raises(DataError, match="'x0' holds 1e\\+300 \\(row 3\\), beyond the range of"):
        index.encode(huge, "t", dtype=np.float32)
    with pytest.raises(DataError, match="'x0' must be numeric"):
        index.encode(frame.assign(x0="a"), "t")
    with pytest.raises(ValueError, match="dtype"):
        index.encode(frame, "t", dtype=np.int64)


@pytest.mark.parametrize("order", ["C", "F"])
def test_first_non_finite_reports_the_first_column_then_row(order):
    values = np.zeros((300_000, 6), order=order)
    assert first_non_finite(values) == (-1, -1)
    values[250_000, 5] = np.inf
    values[100, 3] = np.nan
    values[200, 3] = -np.inf
    assert first_non_finite(values) == (100, 3)
    assert first_non_finite(values[:, 4:]) == (250_000, 1)
    assert first_non_finite(np.zeros((0, 3))) == (-1, -1)


def test_a_shared_finite_check_reads_each_column_once_and_only_inside_its_block(monkeypatch):
    import gdmix.data.features as features_module
    from gdmix.data.schema import shared_finite_checks

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, np.inf, 1.0], "c": [1.0, 2.0, 4.0]})
    checked: list[tuple[int, int]] = []
    real = features_module.first_non_finite
    monkeypatch.setattr(features_module, "first_non_finite",
                        lambda block: checked.append(block.shape) or real(block))  # fmt: skip
    fi_ac = FeatureIndex.build(frame, FeatureConfig(numeric=["a", "c"]), "t")
    fi_b = FeatureIndex.build(frame, FeatureConfig(numeric=["b"]), "t")
    with shared_finite_checks():
        fi_ac.numeric_block(frame, "t")
        fi_ac.numeric_block(frame, "t")  # the same columns again: not checked
        fi_ac.numeric_block(frame, "t", np.float32)  # another dtype: checked
        fi_ac.numeric_block(frame.copy(), "t")  # another table: checked
        for _ in range(2):  # a column that failed is never recorded as finite
            with pytest.raises(DataError, match="'b'"):
                fi_b.numeric_block(frame, "t")
    assert checked == [(3, 2), (3, 2), (3, 2), (3, 1), (3, 1)]
    checked.clear()
    fi_ac.numeric_block(frame, "t")  # outside the block: checked every time
    fi_ac.numeric_block(frame, "t")
    assert checked == [(3, 2), (3, 2)]

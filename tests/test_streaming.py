"""Out-of-core random effects: bucket files streamed from disk equal the in-memory fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gdmix
from gdmix.config import DataConfig, parse_config
from gdmix.engines.buckets import entity_buckets, n_buckets_for, partition_by_entity
from gdmix.engines.streaming import fit_random_effect_streaming


def _frame(seed: int, n: int = 6000, n_users: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, n_users, n)
    x = rng.normal(size=n)
    color = rng.choice(["red", "green", "blue", "grey"], n)
    bias = rng.normal(0, 1, n_users)
    z = bias[user] + 0.8 * x + (color == "red") + rng.normal(0, 0.2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return pd.DataFrame({"uid": np.arange(n), "user": user.astype(str), "x": x,
                         "color": color, "off": rng.normal(0, 0.3, n), "label": y})  # fmt: skip


def _re_config(**kw):
    raw = {"name": "u", "type": "random", "entity": "user", "l2": 2.0,
           "features": {"numeric": ["x"], "categorical": ["color"]}, **kw}  # fmt: skip
    return parse_config({"coordinates": [raw]}).coordinates[0]


@pytest.fixture
def parquet_parts(tmp_path):
    frame = _frame(0)
    folder = tmp_path / "data"
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 4)):
        part = frame.iloc[rows]
        # The first part lacks "grey": the index map must come from every batch.
        if i == 0:
            part = part[part["color"] != "grey"]
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False),
                       folder / f"part-{i}.parquet")  # fmt: skip
    return folder, pq.read_table(folder).to_pandas()


def test_streaming_equals_in_memory_fit(parquet_parts, tmp_path):
    folder, frame = parquet_parts
    data = DataConfig(label="label", offset="off", uid="uid")
    result = fit_random_effect_streaming(
        folder, _re_config(variance="simple"), data, tmp_path / "model",
        work_dir=tmp_path / "work", n_buckets=7, batch_rows=500, progress=False,
    )  # fmt: skip
    assert result.n_buckets == 7 and result.n_rows == len(frame)
    config = parse_config({"data": data.model_dump(), "coordinates": [
        _re_config(variance="simple").model_dump()], "training": {"progress": False}})  # fmt: skip
    ref = gdmix.fit(config, frame)
    streamed = gdmix.GDMixModel.load(result.model_dir)
    a, b = streamed["u"], ref["u"]
    assert a.features.feature_names() == b.features.feature_names()
    assert result.n_entities == len(b.entity_ids)
    order = a._codes(b.entity_ids)
    assert (order >= 0).all()
    np.testing.assert_allclose(a.coef[order], b.coef, atol=1e-10)
    np.testing.assert_allclose(a.intercept[order], b.intercept, atol=1e-10)
    np.testing.assert_allclose(a.variance[order], b.variance, rtol=1e-10)
    scores = pq.read_table(result.scores_dir).to_pandas().sort_values("uid")
    np.testing.assert_allclose(scores["u"], ref.score(frame)["u"], atol=1e-10)
    np.testing.assert_allclose(streamed.score(frame)["u"], ref.score(frame)["u"], atol=1e-10)


def test_partition_keeps_each_entity_in_one_bucket(parquet_parts, tmp_path):
    folder, frame = parquet_parts
    files = partition_by_entity(folder, "user", ["x"], tmp_path / "b", 5, batch_rows=700)
    assert files.rows.sum() == len(frame)
    seen = {}
    for b in files.non_empty():
        part = files.read(b)
        assert len(part) == files.rows[b]
        for u in part["user"].unique():
            assert seen.setdefault(u, b) == b
    assert set(seen) == set(frame["user"])
    # Stable: the same ids always hash to the same buckets.
    ids = frame["user"].to_numpy()
    np.testing.assert_array_equal(entity_buckets(ids, 5), entity_buckets(ids.copy(), 5))
    assert entity_buckets(np.array(["abc"]), 1000)[0] == entity_buckets(np.array(["abc"]), 1000)[0]


def test_bucket_count_follows_the_memory_budget():
    assert n_buckets_for(10_000_000, 400, 4 * 2**30) == 4
    assert n_buckets_for(100, 400, 4 * 2**30) == 1


def test_streaming_rejects_what_it_cannot_do(tmp_path):
    data = DataConfig(label="label", uid="uid")
    with pytest.raises(gdmix.ConfigError, match="one l2"):
        fit_random_effect_streaming(tmp_path, _re_config(l2=[1.0, 2.0]), data, tmp_path / "m",
                                    work_dir=tmp_path)  # fmt: skip
    with pytest.raises(gdmix.ConfigError, match="uid"):
        fit_random_effect_streaming(tmp_path, _re_config(), DataConfig(), tmp_path / "m",
                                    work_dir=tmp_path)  # fmt: skip
    with pytest.raises(gdmix.DataError, match="missing column"):
        pq.write_table(pa.table({"uid": [1], "label": [1]}), tmp_path / "t.parquet")
        fit_random_effect_streaming(tmp_path / "t.parquet", _re_config(), data, tmp_path / "m",
                                    work_dir=tmp_path / "w", progress=False)  # fmt: skip
    assert not (tmp_path / "m").exists()

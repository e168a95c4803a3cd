"""Arrow-typed inputs: pyarrow Tables and pandas ``pd.ArrowDtype`` columns, in memory and
round-tripped through Parquet, train the same model as plain pandas columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gdmix
from gdmix.cli import main
from gdmix.config import parse_config
from gdmix.data.io import read_table

BAG_TYPE = pa.list_(
    pa.struct([("name", pa.string()), ("term", pa.string()), ("value", pa.float64())])
)


def _plain(seed: int = 0, n: int = 400) -> pd.DataFrame:
    """Plain pandas columns: bag as lists of dicts, categorical and entity as objects."""
    rng = np.random.default_rng(seed)
    words = [f"w{j}" for j in range(12)]
    weights = rng.normal(0, 1, len(words))
    user = rng.integers(0, 15, n)
    bags, logits = [], []
    for _ in range(n):
        picked = rng.choice(len(words), 3, replace=False)
        values = rng.random(3)
        bags.append([{"name": words[j], "term": "t", "value": float(v)}
                     for j, v in zip(picked, values, strict=True)])  # fmt: skip
        logits.append(float(weights[picked] @ values))
    color = rng.choice(["red", "green", "blue"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-np.asarray(logits)))).astype(np.int64)
    return pd.DataFrame(
        {"label": y, "user": [f"u{v}" for v in user], "color": color.astype(object), "bag": bags,
         "x": rng.normal(size=n)}
    )  # fmt: skip


def _arrow_typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The same values with pandas Arrow dtypes, as a user's pyarrow-backed frame holds them."""
    out = frame.copy()
    out["bag"] = pd.array(frame["bag"].tolist(), dtype=pd.ArrowDtype(BAG_TYPE))
    out["color"] = frame["color"].astype(pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string())))
    out["user"] = frame["user"].astype(pd.ArrowDtype(pa.string()))
    out["label"] = frame["label"].astype(pd.ArrowDtype(pa.int64()))
    out["x"] = frame["x"].astype(pd.ArrowDtype(pa.float64()))
    return out


CONFIG = {
    "coordinates": [
        {"name": "g", "type": "fixed", "l2": 1.0,
         "features": {"numeric": ["x"], "categorical": ["color"], "bags": ["bag"]}},
        {"name": "u", "type": "random", "entity": "user", "l2": 1.0,
         "features": {"bags": ["bag"]}},
    ],
    "training": {"n_passes": 2, "progress": False, "tol": 0.0},
}  # fmt: skip


def _same_model(a: gdmix.GDMixModel, b: gdmix.GDMixModel) -> None:
    np.testing.assert_allclose(a["g"].coef, b["g"].coef, rtol=0, atol=1e-10)
    assert a["g"].features == b["g"].features
    assert list(a["u"].entity_ids) == list(b["u"].entity_ids)
    np.testing.assert_allclose(a["u"].intercept, b["u"].intercept, rtol=0, atol=1e-10)


def test_arrow_dtype_columns_round_trip_through_parquet_and_train(tmp_path) -> None:
    config = parse_config(CONFIG)
    plain = _plain()
    reference = gdmix.fit(config, plain)
    typed = _arrow_typed(plain)
    assert isinstance(typed["bag"].dtype, pd.ArrowDtype)
    path = tmp_path / "typed.parquet"
    typed.to_parquet(path)  # pandas writes 'list<item: struct<...>>[pyarrow]' into the metadata
    back = read_table(path)
    assert back["bag"].dtype == typed["bag"].dtype
    assert back["color"].dtype == typed["color"].dtype
    _same_model(gdmix.fit(config, typed), reference)
    from_file = gdmix.fit(config, str(path))
    _same_model(from_file, reference)
    # Scoring reads the same file a batch at a time.
    scores = from_file.score(path, batch_rows=150)
    np.testing.assert_allclose(scores["total"], reference.score(plain)["total"], atol=1e-10)


def test_pyarrow_table_is_a_table() -> None:
    config = parse_config(CONFIG)
    plain = _plain()
    reference = gdmix.fit(config, plain)
    table = pa.Table.from_pandas(plain, preserve_index=False)
    model = gdmix.fit(config, table, pa.Table.from_pandas(_plain(seed=1), preserve_index=False))
    assert model.lineage["data"]["train"] == {"rows": len(plain)}
    assert model.metrics["best_pass"] >= 1
    scores = model.score(table)
    assert len(scores) == len(plain)
    # A table built by Arrow itself (no pandas metadata) also reads.
    raw = pa.table({c: table.column(c) for c in table.column_names})
    _same_model(gdmix.fit(config, raw), reference)


def test_cli_reports_a_bag_column_of_the_wrong_type_in_one_line(tmp_path, capsys) -> None:
    frame = _plain().assign(bag=[[1, 2]] * 400)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "t.parquet")
    config = {**CONFIG, "data": {"train": str(tmp_path / "t.parquet")},
              "output": str(tmp_path / "model")}  # fmt: skip
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gdmix train: error: ")
    assert "bag column 'bag' items must be structs with fields name, term, value" in err[0]


def test_cli_reports_data_of_an_unsupported_kind_in_one_line(tmp_path, capsys) -> None:
    (tmp_path / "t.json").write_text("{}")
    config = {**CONFIG, "data": {"train": str(tmp_path / "t.json")},
              "output": str(tmp_path / "model")}  # fmt: skip
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gdmix train: error: {tmp_path / 't.json'}: unsupported file type (use "
                   ".parquet, a Parquet folder, or .csv)"]  # fmt: skip


@pytest.mark.parametrize("bad", [42, {"label": [1]}, np.zeros((3, 2))])
def test_api_names_what_a_table_may_be(bad) -> None:
    with pytest.raises(TypeError, match=r"train must be a pandas DataFrame, a pyarrow Table"):
        gdmix.fit(parse_config(CONFIG), bad)

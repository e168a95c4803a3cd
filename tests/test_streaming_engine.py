"""The streaming engine (``training.engine: streaming``) trains the model the local engine
trains: same coefficients, scores and metrics, from Parquet read chunk by chunk."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gdmix
from gdmix.config import parse_config
from gdmix.errors import ConfigError

D = 4


def _table(n_entities: int, rows: int, seed: int, *, bags: bool = False) -> pd.DataFrame:
    """Known-parameter data: a global model, per-entity slopes on x0, x1 and intercepts."""
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(99)
    w_global = np.array([0.5, -0.3, 0.2, 0.1])
    w_entity = truth.normal(0.0, 0.5, (n_entities, 2))
    b_entity = truth.normal(0.0, 0.5, n_entities)
    n = n_entities * rows
    entity = rng.permutation(np.repeat(np.arange(n_entities), rows))
    X = rng.standard_normal((n, D))
    z = X @ w_global + np.einsum("ij,ij->i", X[:, :2], w_entity[entity]) + b_entity[entity]
    frame = pd.DataFrame({"entity": entity, **{f"x{j}": X[:, j] for j in range(D)}})
    frame["weight"] = rng.uniform(0.5, 2.0, n)
    frame["offset"] = rng.normal(0.0, 0.2, n)
    z = z + frame["offset"].to_numpy()
    if bags:
        terms = rng.integers(0, 6, n)
        frame["bag"] = [[{"name": "t", "term": str(t), "value": 1.0}] for t in terms]
        z = z + 0.3 * (terms % 3 - 1)
    frame["y"] = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)
    return frame


def _raw(train: Path, validation: Path | None, *, bags: bool = False) -> dict:
    fixed = {"numeric": [f"x{j}" for j in range(D)]}
    random = {"numeric": ["x0", "x1"]}
    if bags:
        fixed["bags"] = ["bag"]
        random["bags"] = ["bag"]
    data = {"label": "y", "weight": "weight", "offset": "offset", "train": str(train)}
    if validation is not None:
        data["validation"] = str(validation)
    return {
        "data": data,
        "coordinates": [
            {"name": "global", "type": "fixed", "features": fixed, "l2": 1.0},
            {
                "name": "per_entity",
                "type": "random",
                "entity": "entity",
                "features": random,
                "l2": 2.0,
            },
        ],
        "training": {"n_passes": 3, "early_stopping": False, "progress": False},
    }


def _streaming(raw: dict, tmp_path: Path, **settings) -> dict:
    out = {**raw, "training": {**raw["training"], "engine": "streaming"}}
    out["training"]["streaming"] = {
        "batch_rows": 1500,
        "n_buckets": 3,
        "work_dir": str(tmp_path / "work"),
        **settings,
    }
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("streaming_engine")
    out = {}
    for name, (n, rows, seed, bags) in {
        "train": (300, 15, 0, False),
        "validation": (300, 4, 1, False),
        "train_bags": (200, 12, 2, True),
        "validation_bags": (200, 4, 3, True),
    }.items():
        path = folder / f"{name}.parquet"
        _table(n, rows, seed, bags=bags).to_parquet(path)
        out[name] = path
    return out


def _compare(local: gdmix.GDMixModel, streamed: gdmix.GDMixModel, data: Path) -> None:
    np.testing.assert_allclose(streamed["global"].coef, local["global"].coef, atol=1e-6)
    assert abs(streamed["global"].intercept - local["global"].intercept) < 1e-6
    a = local.coefficient_table("per_entity").sort_values("entity_id").reset_index(drop=True)
    b = streamed.coefficient_table("per_entity").sort_values("entity_id").reset_index(drop=True)
    assert a["entity_id"].tolist() == b["entity_id"].tolist()
    np.testing.assert_allclose(
        b["intercept"].to_numpy(dtype=float), a["intercept"].to_numpy(dtype=float), atol=1e-6
    )
    s_local, s_streamed = local.score(data), streamed.score(data)
    np.testing.assert_allclose(s_streamed["total"], s_local["total"], atol=1e-6)


def test_streaming_equals_local_with_validation(files, tmp_path):
    raw = _raw(files["train"], files["validation"])
    local = gdmix.fit(parse_config(raw))
    records: list[dict] = []
    streamed = gdmix.fit(parse_config(_streaming(raw, tmp_path)), callbacks=[records.append])
    _compare(local, streamed, files["validation"])
    assert streamed.metrics["validation"]["auc"] == pytest.approx(
        local.metrics["validation"]["auc"], abs=1e-9
    )
    assert streamed.metrics["train"]["log_loss"] == pytest.approx(
        local.metrics["train"]["log_loss"], rel=1e-7
    )
    # one record per coordinate update, with the metrics of the local engine's records
    assert [(r["pass"], r["coordinate"]) for r in records] == [
        (r["pass"], r["coordinate"]) for r in local.history
    ]
    for r, q in zip(records, local.history, strict=True):
        assert r["validation_auc"] == pytest.approx(q["validation_auc"], abs=1e-7)
    assert streamed.metrics["streaming"]["n_buckets"] == {"per_entity": 3}
    assert streamed.lineage["engine"] == "streaming"
    # the scratch folders are emptied once the model is in memory
    assert not [p for p in (tmp_path / "work").iterdir() if p.is_dir()]


def test_streaming_equals_local_with_bags_and_float32(files, tmp_path):
    """Categorical/bag shards (CSR chunks, index maps from a first read), float32 storage
    of the numeric fixed-effect block (same optimum to float32 rounding of the data)."""
    raw = _raw(files["train_bags"], files["validation_bags"], bags=True)
    local = gdmix.fit(parse_config(raw))
    streamed = gdmix.fit(parse_config(_streaming(raw, tmp_path, n_buckets=2)))
    _compare(local, streamed, files["validation_bags"])
    assert streamed["global"].features.feature_names() == local["global"].features.feature_names()

    numeric = _raw(files["train"], files["validation"])
    local = gdmix.fit(parse_config(numeric))
    as32 = gdmix.fit(parse_config(_streaming(numeric, tmp_path, feature_dtype="float32")))
    np.testing.assert_allclose(as32["global"].coef, local["global"].coef, atol=1e-5)


def test_streaming_without_validation_stops_on_tol(files, tmp_path):
    raw = _raw(files["train"], None)
    raw["training"].update(n_passes=20, tol=1e-6)
    local = gdmix.fit(parse_config(raw))
    streamed = gdmix.fit(parse_config(_streaming(raw, tmp_path)))
    assert streamed.metrics["stopped"]["reason"] == local.metrics["stopped"]["reason"] == "tol"
    assert streamed.metrics["stopped"]["pass"] == local.metrics["stopped"]["pass"]
    _compare(local, streamed, files["train"])


def test_cli_train_with_the_streaming_engine(files, tmp_path):
    import yaml

    from gdmix.cli import main

    raw = _streaming(_raw(files["train"], files["validation"]), tmp_path)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "model")]) == 0
    # --engine streaming on the command line does the same from a local config
    local_config = tmp_path / "local.yaml"
    local_config.write_text(yaml.safe_dump(_raw(files["train"], files["validation"])))
    out = str(tmp_path / "model2")
    assert main(["train", "--config", str(local_config), "--output", out,
                 "--engine", "streaming"]) == 0  # fmt: skip
    assert gdmix.GDMixModel.load(out).lineage["engine"] == "streaming"
    saved = gdmix.GDMixModel.load(tmp_path / "model")
    local = gdmix.fit(parse_config(_raw(files["train"], files["validation"])))
    _compare(local, saved, files["validation"])


def test_memory_budget_switches_to_streaming(files, tmp_path, caplog):
    raw = _raw(files["train"], files["validation"])
    raw["training"]["memory_budget_gb"] = 1e-6
    raw["training"]["streaming"] = {"work_dir": str(tmp_path / "work")}
    with caplog.at_level(logging.INFO, logger="gdmix"):
        model = gdmix.fit(parse_config(raw))
    assert model.lineage["engine"] == "streaming"
    assert "streaming engine" in caplog.text
    raw["training"]["memory_budget_gb"] = 100.0
    assert gdmix.fit(parse_config(raw)).lineage.get("engine") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"l2": [1.0, 2.0]}, "not a search grid"),
        ({"mode": "cohort"}, "cohort"),
    ],
)
def test_streaming_refuses_what_it_does_not_support(files, tmp_path, change, message):
    raw = _streaming(_raw(files["train"], files["validation"]), tmp_path)
    raw["coordinates"][1].update(change)
    with pytest.raises(ConfigError, match=message):
        gdmix.fit(parse_config(raw))


def test_streaming_refuses_a_dataframe(files, tmp_path):
    raw = _streaming(_raw(files["train"], None), tmp_path)
    with pytest.raises(ConfigError, match="reads Parquet files"):
        gdmix.fit(parse_config(raw), pd.read_parquet(files["train"]))


def test_l2_auto_estimated_on_a_sample_of_buckets(files, tmp_path):
    """With every bucket in the sample, the estimate is the local engine's; with a third
    of them, an estimate from a random third of the entities, close to it."""
    raw = _raw(files["train"], None)
    raw["coordinates"][1]["l2"] = "auto"
    raw["training"]["n_passes"] = 1
    local = gdmix.fit(parse_config(raw))
    streamed = gdmix.fit(parse_config(_streaming(raw, tmp_path, n_buckets=2)))
    estimate, reference = streamed["per_entity"].params, local["per_entity"].params
    for key in ("l2", "intercept_l2"):
        assert estimate[key] == pytest.approx(reference[key], rel=2e-3)
    prior = streamed.history[-1]["prior"]
    assert prior["sample"]["buckets"] == prior["sample"]["of"] == 2
    np.testing.assert_allclose(streamed.score(files["validation"])["total"],
                               local.score(files["validation"])["total"], atol=1e-3)  # fmt: skip

    third = gdmix.fit(parse_config(_streaming(raw, tmp_path, n_buckets=6)))
    sample = third.history[-1]["prior"]["sample"]
    assert sample["buckets"] == 2 and sample["of"] == 6
    assert 50 < sample["entities"] < 200  # about a third of the 300 entities
    for key in ("l2", "intercept_l2"):
        assert third["per_entity"].params[key] == pytest.approx(reference[key], rel=0.5)
    assert third.history[-1]["params"]["l2"] == third["per_entity"].params["l2"]

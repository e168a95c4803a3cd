"""Avro input: Photon/GAME training records read as gdmix tables.

Fixtures are written here with fastavro from the project's schemas
(:mod:`gdmix.photon.schemas`): feature bags, ``metadataMap`` entity ids, weights,
offsets, ``daily/yyyy/MM/dd`` folders.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

fastavro = pytest.importorskip("fastavro")

import gdmix  # noqa: E402
from gdmix.cli import main  # noqa: E402
from gdmix.config import DataConfig, load_config, parse_config  # noqa: E402
from gdmix.data.dated import dated_path, parse_dated_path  # noqa: E402
from gdmix.data.io import read_table  # noqa: E402
from gdmix.errors import ConfigError, DataError  # noqa: E402
from gdmix.photon.schemas import TRAINING_EXAMPLE, training_example_schema  # noqa: E402

BAG_TYPE = pa.list_(
    pa.struct([("name", pa.string()), ("term", pa.string()), ("value", pa.float64())])
)
SCHEMA = training_example_schema(
    response="response", bags=["features", "userFeatures"], entities=["item_id"]
)


def photon_records(n: int, seed: int, *, first_uid: int = 0) -> list[dict]:
    """GAME-style records: response, global and per-user bags, the user id in
    metadataMap, the item id as a top-level field, weights and offsets."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        user, item = int(rng.integers(0, 20)), int(rng.integers(0, 8))
        x = rng.normal(size=3)
        features = [{"name": "x", "term": str(k), "value": float(x[k])} for k in range(3)]
        if rng.uniform() < 0.5:
            features.append({"name": "genre", "term": f"g{item % 3}", "value": 1.0})
        user_features = [{"name": "x", "term": "0", "value": float(x[0])}]
        logit = 0.7 * x[0] - 0.4 * x[1] + 0.5 * np.sin(user) + 0.3 * np.cos(item)
        out.append(
            {
                "uid": str(first_uid + i),
                "response": float(rng.uniform() < 1 / (1 + np.exp(-logit))),
                "features": features,
                "userFeatures": user_features,
                "item_id": f"i{item}",
                "metadataMap": {"user_id": str(user), "country": "fr"},
                "weight": float(rng.uniform(0.5, 2.0)),
                "offset": float(rng.normal(scale=0.1)),
            }
        )
    return out


def write_avro(path: Path, records: list[dict], schema: dict = SCHEMA) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fo:
        fastavro.writer(fo, fastavro.parse_schema(schema), records)
    return path


def as_frame(records: list[dict]) -> pd.DataFrame:
    """The records as a plain table (bags as Arrow lists of structs, ids as integers)."""
    frame = pd.DataFrame(
        {
            "uid": [r["uid"] for r in records],
            "response": [r["response"] for r in records],
            "item_id": [r["item_id"] for r in records],
            "weight": [r["weight"] for r in records],
            "offset": [r["offset"] for r in records],
            "user_id": [int(r["metadataMap"]["user_id"]) for r in records],
        }
    )
    for bag in ("features", "userFeatures"):
        frame[bag] = pd.array([r[bag] for r in records], dtype=pd.ArrowDtype(BAG_TYPE))
    return frame


def job_config(**data) -> gdmix.GDMixConfig:
    return parse_config(
        {
            "data": {
                "label": "response",
                "weight": "weight",
                "offset": "offset",
                "uid": "uid",
                **data,
            },
            "coordinates": [
                {"name": "global", "type": "fixed", "features": {"bags": ["features"]}},
                {
                    "name": "per_user",
                    "type": "random",
                    "entity": "user_id",
                    "l2": 3.0,
                    "features": {"bags": ["userFeatures"]},
                },
                {"name": "per_item", "type": "random", "entity": "item_id", "l2": 3.0},
            ],
            "training": {"n_passes": 2, "progress": False},
        }
    )


def test_read_photon_records(tmp_path: Path) -> None:
    records = photon_records(50, seed=0)
    records[3]["metadataMap"] = None
    records[4]["weight"] = None
    path = write_avro(tmp_path / "part-00000.avro", records)
    frame = read_table(path)
    assert list(frame.columns) == [
        "uid", "response", "features", "userFeatures", "item_id", "weight", "offset",
        "country", "user_id",
    ]  # fmt: skip
    assert isinstance(frame["features"].dtype, pd.ArrowDtype)
    assert frame["features"].dtype.pyarrow_dtype == BAG_TYPE
    assert frame["features"].iloc[0] == records[0]["features"]
    assert frame["user_id"].iloc[0] == records[0]["metadataMap"]["user_id"]
    assert pd.isna(frame["user_id"].iloc[3]) and pd.isna(frame["weight"].iloc[4])
    np.testing.assert_array_equal(frame["response"], [r["response"] for r in records])
    picked = read_table(path, ["response", "user_id"], optional=["nope"])
    assert list(picked.columns) == ["response", "user_id"]
    with pytest.raises(DataError, match=r"missing column\(s\) \['nope'\]"):
        read_table(path, ["response", "nope"])


def test_photon_training_example_layout(tmp_path: Path) -> None:
    """Photon's own TrainingExampleAvro: response 'label', one bag 'features'."""
    rec = {"uid": None, "label": 1.0, "features": [{"name": "a", "term": "", "value": 2.0}],
           "metadataMap": None, "weight": None, "offset": None}  # fmt: skip
    frame = read_table(
        write_avro(tmp_path / "x.avro", [rec, {**rec, "label": 0.0}], TRAINING_EXAMPLE)
    )
    assert list(frame["label"]) == [1.0, 0.0]
    assert frame["features"].iloc[0] == rec["features"]


def test_model_from_avro_equals_model_from_parquet(tmp_path: Path) -> None:
    train_records, test_records = photon_records(900, seed=1), photon_records(300, seed=2)
    folder = tmp_path / "train_avro"
    write_avro(folder / "part-00000.avro", train_records[:500])
    write_avro(folder / "part-00001.avro", train_records[500:])
    (folder / "_SUCCESS").write_text("")
    as_frame(train_records).to_parquet(tmp_path / "train.parquet")
    test_avro = write_avro(tmp_path / "test.avro", test_records)

    from_avro = gdmix.fit(job_config(), folder)
    from_parquet = gdmix.fit(job_config(), tmp_path / "train.parquet")
    fe_a, fe_p = from_avro["global"], from_parquet["global"]
    assert fe_a.features.feature_names() == fe_p.features.feature_names()
    np.testing.assert_allclose(fe_a.coef, fe_p.coef, rtol=0, atol=1e-10)
    assert abs(fe_a.intercept - fe_p.intercept) <= 1e-10
    for name in ("per_user", "per_item"):
        a = from_avro.coefficient_table(name)
        p = from_parquet.coefficient_table(name)
        a.index, p.index = a["entity_id"].astype(str), p["entity_id"].astype(str)
        p = p.loc[a.index]
        numbers = [c for c in a.columns if c not in ("entity_id",)]
        np.testing.assert_allclose(a[numbers].to_numpy(float), p[numbers].to_numpy(float),
                                   rtol=0, atol=1e-10)  # fmt: skip
    # Scoring and evaluation read Avro too (the same rows as a Parquet file).
    scores = from_avro.score(test_avro)
    assert list(scores["uid"]) == [r["uid"] for r in test_records]
    expected = from_parquet.score(as_frame(test_records))["total"].to_numpy()
    assert np.max(np.abs(scores["total"].to_numpy() - expected)) <= 1e-9
    metrics = from_avro.evaluate(test_avro)
    assert 0.5 < metrics["auc"] <= 1.0


def test_top_level_field_wins_over_metadata_key(tmp_path: Path) -> None:
    records = photon_records(5, seed=3)
    for r in records:
        r["metadataMap"]["item_id"] = "shadow"
    frame = read_table(write_avro(tmp_path / "a.avro", records))
    assert list(frame["item_id"]) == [r["item_id"] for r in records]


def _dated_root(tmp_path: Path, days: list[dt.date]) -> Path:
    root = tmp_path / "events"
    for k, day in enumerate(days):
        folder = root / "daily" / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
        write_avro(folder / "part-00000.avro", photon_records(40, seed=k, first_uid=1000 * k))
        (folder / "_SUCCESS").write_text("")
    return root


def _days_read(frame: pd.DataFrame) -> set[int]:
    return {int(u) // 1000 for u in frame["uid"]}


def test_date_range_selects_exactly_its_days(tmp_path: Path) -> None:
    days = [dt.date(2026, 10, 30) + dt.timedelta(days=k) for k in range(6)]  # 10-30..11-04
    del days[2]  # 11-01 has no folder
    root = _dated_root(tmp_path, days)
    data = DataConfig(train=str(root), date_range={"start": "2026-10-31", "end": "2026-11-03"})
    assert data.train == dated_path(root, dt.date(2026, 10, 31), dt.date(2026, 11, 3))
    assert data.train.endswith("events/daily/2026/10/31..2026/11/03")
    frame = read_table(data.train)
    # days[k] was written with uids 1000*k...: 10-31 (k=1), 11-02 (k=2), 11-03 (k=3)
    assert _days_read(frame) == {1, 2, 3}
    assert list(frame["uid"].astype(int)) == sorted(frame["uid"].astype(int))  # oldest first
    assert parse_dated_path(data.train) == (root, dt.date(2026, 10, 31), dt.date(2026, 11, 3))
    # The whole root is every day.
    assert _days_read(read_table(root)) == {0, 1, 2, 3, 4}
    with pytest.raises(DataError, match="no day folder"):
        read_table(dated_path(root, dt.date(2026, 12, 1), dt.date(2026, 12, 5)))
    with pytest.raises(DataError, match="is not a folder"):
        read_table(dated_path(root / "daily/2026/10/30/part-00000.avro", days[0], days[1]))
    with pytest.raises(DataError, match="does not exist"):
        read_table(dated_path(tmp_path / "nowhere", days[0], days[1]))
    with pytest.raises(DataError, match="not a range of real days"):
        read_table(f"{root}/daily/2026/02/30..2026/03/01")


def test_days_ago_counts_back_from_today(tmp_path: Path) -> None:
    today = dt.date.today()
    days = [today - dt.timedelta(days=k) for k in (4, 3, 2, 1, 0)]
    root = _dated_root(tmp_path, days)
    data = DataConfig(train=str(root), validation=str(root), days_ago={"start": 3, "end": 2},
                      validation_days_ago={"start": 0, "end": 0})  # fmt: skip
    assert _days_read(read_table(data.train)) == {1, 2}
    assert _days_read(read_table(data.validation)) == {4}
    # A saved config keeps the days chosen (read again, it is the same selection).
    again = DataConfig.model_validate(data.model_dump(mode="json"))
    assert again.train == data.train and again.validation == data.validation


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"date_range": {"start": "2026-11-02", "end": "2026-11-01"}}, "on or before"),
        ({"days_ago": {"start": 1, "end": 2}}, "must be >= 'end'"),
        ({"days_ago": {"start": -1, "end": 0}}, "greater than or equal to 0"),
        (
            {
                "days_ago": {"start": 2, "end": 1},
                "date_range": {"start": "2026-11-01", "end": "2026-11-02"},
            },
            "both select days",
        ),
        ({"train": None, "days_ago": {"start": 2, "end": 1}}, "which is not set"),
        ({"date_range": {"start": "2026-11-01"}}, "end"),
    ],
)
def test_date_settings_are_checked(data: dict, message: str) -> None:
    raw = {"data": {"train": "events", **data},
           "coordinates": [{"name": "g", "type": "fixed"}]}  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_train_and_score_from_dated_avro_with_the_cli(tmp_path: Path, capsys) -> None:
    days = [dt.date(2026, 11, 1) + dt.timedelta(days=k) for k in range(4)]
    root = _dated_root(tmp_path, days)
    config = job_config().model_dump(mode="json", exclude_none=True)
    config["data"].update(
        train="events",
        validation="events",
        date_range={"start": "2026-11-01", "end": "2026-11-03"},
        validation_date_range={"start": "2026-11-04", "end": "2026-11-04"},
    )
    config["output"] = "model"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert loaded.data.train == str(root / "daily/2026/11/01..2026/11/03")
    assert main(["-q", "train", "--config", str(path)]) == 0
    model = gdmix.GDMixModel.load(tmp_path / "model")
    assert model.lineage["data"]["train"]["rows"] == 120
    assert model.data.train.endswith("daily/2026/11/01..2026/11/03")
    out = tmp_path / "scores.parquet"
    day = str(root / "daily/2026/11/04..2026/11/04")
    args = ["-q", "score", "--model", str(tmp_path / "model"), "--data", day, "--output", str(out)]
    assert main(args) == 0
    scores = pd.read_parquet(out)
    expected = model.score(read_table(day))["total"].to_numpy()
    np.testing.assert_array_equal(scores["total"].to_numpy(), expected)
    assert main(["-q", "evaluate", "--model", str(tmp_path / "model"), "--data", day]) == 0
    assert "auc" in capsys.readouterr().out


def test_bad_avro_is_one_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avro"
    bad.write_bytes(b"Obj\x01 not really")
    with pytest.raises(DataError, match=r"cannot read .*bad\.avro as Avro"):
        read_table(bad)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "part-0.avro").write_text("")
    with pytest.raises(DataError, match=r"part-0\.avro as Avro"):
        read_table(folder)

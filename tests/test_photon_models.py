"""Photon model interop: export to BayesianLinearModelAvro and import back.

- A model with a fixed effect and two random effects (numeric, categorical and bag
  features; integer and string entity ids) exported and imported scores identically.
- Records written here with fastavro (hand-built, known coefficients) import into a
  model whose scores are the closed form ``offset + x.w + b`` computed with numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

fastavro = pytest.importorskip("fastavro")

import gdmix  # noqa: E402
from gdmix.cli import main  # noqa: E402
from gdmix.config import parse_config  # noqa: E402
from gdmix.errors import ConfigError, DataError, OutputError  # noqa: E402
from gdmix.model import GDMixModel  # noqa: E402
from gdmix.photon import export_model, import_model, read_linear_models  # noqa: E402
from gdmix.photon.schemas import (  # noqa: E402
    BAYESIAN_LINEAR_MODEL,
    INTERCEPT_NAME,
    INTERCEPT_TERM,
    MODEL_CLASSES,
)

BAG_TYPE = pa.list_(
    pa.struct([("name", pa.string()), ("term", pa.string()), ("value", pa.float64())])
)
TAGS = [("t0", ""), ("t1", "a"), ("t1", "b"), ("t2", "x")]
COLORS = ["red", "green", "blue"]


def mixed_frame(n: int, seed: int) -> pd.DataFrame:
    """Rows with numeric, categorical and bag features, two entity columns, an offset."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 25, size=n)
    items = rng.integers(0, 15, size=n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(COLORS, size=n)
    bags = []
    tag_effect = np.zeros(n)
    for i in range(n):
        picked = rng.choice(len(TAGS), size=rng.integers(0, 3), replace=False)
        bag = [
            {"name": TAGS[k][0], "term": TAGS[k][1], "value": float(rng.uniform(0.5, 2))}
            for k in picked
        ]
        tag_effect[i] = sum(0.4 * b["value"] for b in bag if b["name"] == "t1")
        bags.append(bag)
    offset = rng.normal(scale=0.2, size=n)
    logit = offset + 0.8 * x1 - 0.5 * x2 + 0.3 * (color == "red") + tag_effect
    logit += 0.6 * np.sin(users) + 0.4 * np.cos(items)
    label = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "item_id": [f"m{k}" for k in items],
            "x1": x1,
            "x2": x2,
            "color": color,
            "offset": offset,
            "label": label,
        }
    )
    frame["tags"] = pd.array(bags, dtype=pd.ArrowDtype(BAG_TYPE))
    return frame


def mixed_config(**extra):
    return parse_config(
        {
            "data": {"label": "label", "offset": "offset"},
            "coordinates": [
                {
                    "name": "global",
                    "type": "fixed",
                    "l2": 1.0,
                    "features": {
                        "numeric": ["x1", "x2"],
                        "categorical": ["color"],
                        "bags": ["tags"],
                    },
                },
                {
                    "name": "per_user",
                    "type": "random",
                    "entity": "user_id",
                    "l2": 2.0,
                    "features": {"numeric": ["x1"], "bags": ["tags"]},
                    **extra,
                },
                {
                    "name": "per_item",
                    "type": "random",
                    "entity": "item_id",
                    "l2": 2.0,
                    "features": {"numeric": ["x2"], "categorical": ["color"]},
                },
            ],
            "training": {"n_passes": 2, "progress": False},
        }
    )


@pytest.fixture(scope="module")
def mixed_model() -> tuple[GDMixModel, pd.DataFrame]:
    train, test = mixed_frame(1500, seed=1), mixed_frame(400, seed=2)
    return gdmix.fit(mixed_config(variance="simple"), train), test


def test_round_trip_scores_identically(mixed_model, tmp_path: Path) -> None:
    model, test = mixed_model
    out = export_model(model, tmp_path / "photon")
    assert (out / "fixed-effect/global/coefficients/part-00000.avro").is_file()
    assert (out / "random-effect/per_user/id-info").read_text().split() == ["user_id", "per_user"]
    assert (out / "fixed-effect/global/id-info").read_text().split() == ["global"]

    back = import_model(out)
    assert [c.name for c in back.coordinates] == ["global", "per_user", "per_item"]
    before, after = model.score(test), back.score(test)
    for col in ["global", "per_user", "per_item", "total"]:
        assert np.max(np.abs(before[col].to_numpy() - after[col].to_numpy())) <= 1e-9
    # ... and through a saved model directory and the CLI.
    back.save(tmp_path / "imported")
    again = GDMixModel.load(tmp_path / "imported").score(test)["total"].to_numpy()
    assert np.max(np.abs(again - before["total"].to_numpy())) <= 1e-9


def test_exported_records_follow_photon(mixed_model, tmp_path: Path) -> None:
    model, _ = mixed_model
    out = export_model(model, tmp_path / "photon")
    fixed = read_linear_models(out / "fixed-effect/global/coefficients")
    assert len(fixed) == 1 and fixed[0]["modelId"] == "fixed-effect"
    means = {(m["name"], m["term"]): m["value"] for m in fixed[0]["means"]}
    fe = model["global"]
    assert means[(INTERCEPT_NAME, INTERCEPT_TERM)] == fe.intercept
    names = fe.features.feature_names()
    assert means[("x1", "")] == fe.coef[names.index("x1")]
    assert means[("color", "red")] == fe.coef[names.index("color=red")]
    assert means[("t1", "a")] == fe.coef[names.index("tags[t1,a]")]
    users = read_linear_models(out / "random-effect/per_user/coefficients")
    re_user = model["per_user"]
    assert sorted(r["modelId"] for r in users) == sorted(str(i) for i in re_user.entity_ids)
    first = next(r for r in users if r["modelId"] == str(re_user.entity_ids[0]))
    got = {(m["name"], m["term"]): m["value"] for m in first["means"]}
    assert got[(INTERCEPT_NAME, INTERCEPT_TERM)] == re_user.intercept[0]
    assert first["variances"] is not None  # trained with variance: simple
    items = read_linear_models(out / "random-effect/per_item/coefficients")
    assert {r["modelId"] for r in items} <= {f"m{k}" for k in range(15)}
    notes = json.loads((out / "gdmix-photon.json").read_text())
    assert [c["name"] for c in notes["coordinates"]] == ["global", "per_user", "per_item"]


def test_export_refuses_to_overwrite(mixed_model, tmp_path: Path) -> None:
    model, _ = mixed_model
    out = export_model(model, tmp_path / "photon")
    with pytest.raises(OutputError, match="--overwrite"):
        export_model(model, out)
    export_model(model, out, overwrite=True, coordinates=["global"])
    assert not (out / "random-effect").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="does not hold a gdmix Photon export"):
        export_model(model, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="no coordinate"):
        export_model(model, tmp_path / "x", coordinates=["nope"])


def test_cli_round_trip(mixed_model, tmp_path: Path, capsys) -> None:
    model, test = mixed_model
    model.save(tmp_path / "model")
    assert main(["-q", "export-photon", str(tmp_path / "model"), str(tmp_path / "ph")]) == 0
    assert main(["-q", "export-photon", str(tmp_path / "model"), str(tmp_path / "ph")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    args = ["-q", "import-photon", str(tmp_path / "ph"), "--output", str(tmp_path / "back")]
    assert main(args) == 0
    back = GDMixModel.load(tmp_path / "back")
    diff = back.score(test)["total"].to_numpy() - model.score(test)["total"].to_numpy()
    assert np.max(np.abs(diff)) <= 1e-9
    assert main(args) == 0  # a gdmix model directory is replaced atomically


@pytest.mark.parametrize("task", ["linear", "poisson"])
def test_round_trip_of_other_tasks(task: str, tmp_path: Path) -> None:
    train, test = mixed_frame(600, seed=3), mixed_frame(200, seed=4)
    rng = np.random.default_rng(0)
    mean = np.exp(0.3 * train["x1"].to_numpy())
    train["label"] = rng.poisson(mean) if task == "poisson" else rng.normal(mean)
    raw = mixed_config().model_dump(mode="json", exclude_none=True)
    raw["task"] = task
    for part in [raw["data"], *raw["coordinates"]]:
        part.pop("task", None)
    raw["training"].pop("metric", None)
    model = gdmix.fit(parse_config(raw), train)
    out = export_model(model, tmp_path / "photon")
    records = read_linear_models(out / "random-effect/per_item/coefficients")
    assert {r["modelClass"] for r in records} == {MODEL_CLASSES[task]}
    back = import_model(out)
    assert back.data.task == task and back["per_user"].config.task == task
    diff = back.score(test)["total"].to_numpy() - model.score(test)["total"].to_numpy()
    assert np.max(np.abs(diff)) <= 1e-9
    # Without the notes, the task comes from the records' modelClass.
    (out / "gdmix-photon.json").unlink()
    fe = import_model(fixed={"global": out / "fixed-effect/global/coefficients"})
    assert fe.data.task == task


# -- hand-built Photon records -----------------------------------------------------------

FE_MEANS = {(INTERCEPT_NAME, INTERCEPT_TERM): 0.25, ("x1", ""): 0.5, ("x2", ""): -1.5,
            ("color", "red"): 0.75, ("color", "blue"): -0.125, ("t1", "a"): 2.0,
            ("t2", "x"): -0.5}  # fmt: skip
USER_MEANS = {
    "3": {(INTERCEPT_NAME, INTERCEPT_TERM): 1.0, ("x1", ""): 0.5, ("t0", ""): 0.25},
    "7": {(INTERCEPT_NAME, INTERCEPT_TERM): -2.0, ("t1", "b"): 1.5},
    "11": {("x1", ""): -0.75},
}


def _ntv(means: dict[tuple[str, str], float]) -> list[dict]:
    return [{"name": n, "term": t, "value": v} for (n, t), v in means.items()]


def _write_models(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fo:
        fastavro.writer(fo, fastavro.parse_schema(BAYESIAN_LINEAR_MODEL), records)
    return path


def _closed_form(frame: pd.DataFrame) -> np.ndarray:
    """offset + x.w + b of the fixed effect plus each row's user model, with numpy."""
    fe_w = np.array([FE_MEANS[("x1", "")], FE_MEANS[("x2", "")]])
    total = frame["offset"].to_numpy() + frame[["x1", "x2"]].to_numpy() @ fe_w
    total += FE_MEANS[(INTERCEPT_NAME, INTERCEPT_TERM)]
    total += np.array([FE_MEANS.get(("color", c), 0.0) for c in frame["color"]])
    for i, (bag, user, x1) in enumerate(
        zip(frame["tags"].tolist(), frame["user_id"], frame["x1"], strict=True)
    ):
        user_means = USER_MEANS.get(str(user), {})
        total[i] += user_means.get((INTERCEPT_NAME, INTERCEPT_TERM), 0.0)
        total[i] += user_means.get(("x1", ""), 0.0) * x1
        for f in bag:
            key = (f["name"], f["term"])
            total[i] += FE_MEANS.get(key, 0.0) * f["value"] + user_means.get(key, 0.0) * f["value"]
    return total


def test_import_hand_built_records_scores_closed_form(tmp_path: Path) -> None:
    fe = _write_models(tmp_path / "fe.avro", [{"modelId": "fixed-effect", "means": _ntv(FE_MEANS)}])
    re_records = [
        {"modelId": k, "means": _ntv(v), "modelClass": None} for k, v in USER_MEANS.items()
    ]
    re = _write_models(tmp_path / "re" / "part-00000.avro", re_records)
    config = parse_config(
        {
            "data": {"label": "label", "offset": "offset"},
            "coordinates": [
                {
                    "name": "global",
                    "type": "fixed",
                    "features": {
                        "numeric": ["x1", "x2"],
                        "categorical": ["color"],
                        "bags": ["tags"],
                    },
                },
                {
                    "name": "per_user",
                    "type": "random",
                    "entity": "user_id",
                    "features": {"numeric": ["x1"], "bags": ["tags"]},
                },
            ],
        }
    )
    model = import_model(fixed={"global": fe}, random={"per_user": re.parent}, config=config)
    assert model.data.task == "logistic"
    frame = mixed_frame(300, seed=5)
    frame["user_id"] = np.random.default_rng(0).choice([3, 7, 11, 99], size=len(frame))
    got = model.score(frame)["total"].to_numpy()
    assert np.max(np.abs(got - _closed_form(frame))) <= 1e-12
    # String ids in the scoring table find the same entities.
    frame["user_id"] = frame["user_id"].astype(str)
    assert np.max(np.abs(model.score(frame)["total"].to_numpy() - got)) <= 1e-12


def test_import_defaults_to_the_features_bag(tmp_path: Path) -> None:
    means = {(INTERCEPT_NAME, INTERCEPT_TERM): -0.5, ("age", ""): 2.0, ("job", "doctor"): 1.0}
    fe = _write_models(tmp_path / "fe.avro", [{"modelId": "fixed-effect", "means": _ntv(means)}])
    model = import_model(fixed={"global": fe})
    assert model["global"].config.features.bags == ["features"]
    frame = pd.DataFrame({"features": pd.array(
        [[{"name": "age", "term": "", "value": 0.3}],
         [{"name": "job", "term": "doctor", "value": 1.0}, {"name": "x", "term": "", "value": 5.0}],
         []], dtype=pd.ArrowDtype(BAG_TYPE))})  # fmt: skip
    got = model.score(frame)["total"].to_numpy()
    np.testing.assert_allclose(got, [-0.5 + 0.6, -0.5 + 1.0, -0.5], rtol=0, atol=1e-15)


def test_import_errors(tmp_path: Path) -> None:
    fe = _write_models(
        tmp_path / "fe.avro",
        [{"modelId": "fixed-effect", "means": _ntv({("x1", ""): 1.0, ("odd", "t"): 2.0})}],
    )
    config = parse_config(
        {"coordinates": [{"name": "g", "type": "fixed", "features": {"numeric": ["x1"]}}]}
    )
    with pytest.raises(DataError, match="no bag column"):
        import_model(fixed={"g": fe}, config=config)
    svm = "com.linkedin.photon.ml.supervised.classification.SmoothedHingeLossLinearSVMModel"
    odd = _write_models(
        tmp_path / "svm.avro", [{"modelId": "fixed-effect", "means": [], "modelClass": svm}]
    )
    with pytest.raises(DataError, match="logistic, linear and Poisson"):
        import_model(fixed={"g": odd})
    linear = _write_models(
        tmp_path / "lin.avro",
        [{"modelId": "fixed-effect", "means": [], "modelClass": MODEL_CLASSES["linear"]}],
    )
    poisson = _write_models(
        tmp_path / "poisson.avro",
        [{"modelId": "1", "means": [], "modelClass": MODEL_CLASSES["poisson"]}],
    )
    with pytest.raises(DataError, match="several tasks"):
        import_model(fixed={"g": linear}, random={"r": poisson}, entities={"r": "user"})
    with pytest.raises(ConfigError, match="task is 'logistic'"):
        import_model(fixed={"g": linear}, config=config)
    twice = _write_models(tmp_path / "two.avro", [{"modelId": "fixed-effect", "means": []}] * 2)
    with pytest.raises(DataError, match="one model"):
        import_model(fixed={"g": twice})
    with pytest.raises(ConfigError, match="entity column"):
        import_model(random={"r": fe})
    (tmp_path / "bad.avro").write_text("not avro")
    with pytest.raises(DataError, match="cannot read"):
        import_model(fixed={"g": tmp_path / "bad.avro"})


def test_export_refuses_features_that_photon_would_merge(tmp_path: Path) -> None:
    """A numeric column named like a bag feature ("t0", "") is one Photon feature."""
    frame = mixed_frame(300, seed=6)
    frame["t0"] = frame["x1"]
    config = parse_config(
        {
            "coordinates": [
                {"name": "g", "type": "fixed", "features": {"numeric": ["t0"], "bags": ["tags"]}}
            ],
            "training": {"progress": False},
        }
    )
    model = gdmix.fit(config, frame)
    with pytest.raises(ConfigError, match=r"\('t0', ''\) with different coefficients"):
        export_model(model, tmp_path / "photon")
    assert not (tmp_path / "photon").exists()


def test_round_trip_with_text_and_hashed_features(tmp_path: Path) -> None:
    """Words of a text column export as (column, word), hashed buckets as (block, "j")."""
    rng = np.random.default_rng(5)
    n = 600
    words = np.array(["good", "bad", "fine", "great", "poor", "ok"])
    frame = pd.DataFrame({
        "text": [" ".join(rng.choice(words, 4)) for _ in range(n)],
        "ad": rng.choice([f"ad{i}" for i in range(40)], n),
        "user": rng.integers(0, 30, n),
        "y": rng.integers(0, 2, n),
    })  # fmt: skip
    raw = {"data": {"label": "y"}, "training": {"progress": False},
           "coordinates": [
               {"name": "g", "type": "fixed", "features": {"text": ["text"],
                                                          "hashed": [{"columns": "ad",
                                                                      "n_buckets": 16}]}},
               {"name": "u", "type": "random", "entity": "user",
                "features": {"text": ["text"]}}]}  # fmt: skip
    model = gdmix.fit(parse_config(raw), frame)
    back = import_model(export_model(model, tmp_path / "photon"))
    before, after = model.score(frame)["total"], back.score(frame)["total"]
    assert np.max(np.abs(before.to_numpy() - after.to_numpy())) <= 1e-9
    records = read_linear_models(tmp_path / "photon/fixed-effect/g/coefficients")
    names = {(m["name"], m["term"]) for r in records for m in r["means"]}
    assert ("text", "good") in names and any(n == "ad" for n, _ in names)

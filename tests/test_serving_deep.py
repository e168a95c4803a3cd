"""The scoring service with deep (PyTorch) and GBDT (LightGBM) fixed effects: equal to
batch scoring of the same rows, unseen levels, hashed columns, bags and text included."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

import gdmix
from gdmix.config import parse_config
from gdmix.serving import ModelService
from gdmix.serving.app import create_app

WORDS = np.array(["good", "great", "bad", "awful", "plain"])


def _frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], n)
    item = rng.integers(0, 30, n)
    user = rng.integers(0, 25, n)
    picks = rng.integers(0, 5, size=(n, 2))
    title = [f"{WORDS[a]} movie {b}" for a, b in picks]
    terms = [
        [{"name": "w", "term": str(WORDS[a]), "value": 1.0},
         {"name": "len", "value": float(b)}] if a < 3 else []
        for a, b in picks
    ]  # fmt: skip
    logit = np.sin(2 * x1) + 0.5 * x2 + (color == "red") - 0.5 * (picks[:, 0] >= 3)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"uid": np.arange(n), "user": user, "item": item, "x1": x1, "x2": x2,
                         "color": color, "title": title, "terms": terms, "label": y})  # fmt: skip


FEATURES = {"numeric": ["x1", "x2"], "categorical": ["color", "item"], "bags": ["terms"]}
RANDOM = {"name": "per_user", "type": "random", "entity": "user", "l2": 1.0,
          "features": {"numeric": ["x1"]}}  # fmt: skip
DEEP = {
    "name": "global", "type": "deep", "device": "cpu", "features": FEATURES,
    "architecture": {"kind": "wide_deep", "hidden": [8]}, "hash_buckets": {"item": 8},
    "text": {"column": "title", "max_length": 4}, "max_epochs": 2, "batch_size": 128,
    "learning_rate": 0.01,
}  # fmt: skip
GBDT = {
    "name": "global", "type": "gbdt", "features": FEATURES, "n_estimators": 20,
    "num_leaves": 7, "min_data_in_leaf": 10, "l2": 0.5, "params": {"num_threads": 1},
}  # fmt: skip


def _test_frame() -> pd.DataFrame:
    test = _frame(1, 40)
    test["color"] = test["color"].astype(object)
    test.loc[0, "color"] = "purple"  # unseen level
    test.loc[1, "color"] = None  # null
    test.loc[2, "item"] = 1234  # a level the hash or the index map never saw
    test.loc[3, "user"] = 999  # unseen entity
    test.at[4, "terms"] = [{"name": "w", "term": "never", "value": 1.0}]
    test.loc[5, "title"] = "unknown words only"
    return test


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for record in frame.to_dict("records"):
        row = {}
        for k, v in record.items():
            row[k] = v.item() if isinstance(v, np.generic) else v
        out.append(row)
    return out


@pytest.fixture(scope="module", params=["deep", "gbdt"])
def served(request, tmp_path_factory):
    fixed = DEEP if request.param == "deep" else GBDT
    # "item" is a feature of the fixed effect and the entity of a random effect
    per_item = {"name": "per_item", "type": "random", "entity": "item", "l2": 1.0}
    config = parse_config({"data": {"uid": "uid"}, "coordinates": [fixed, RANDOM, per_item],
                           "training": {"n_passes": 1, "progress": False}})  # fmt: skip
    model = gdmix.fit(config, _frame(0, 1200))
    root = tmp_path_factory.mktemp(request.param) / "store"
    gdmix.ModelStore(root).publish(model.write_into, promote=True)
    with TestClient(create_app(ModelService(root, poll_interval=0))) as client:
        yield request.param, gdmix.GDMixModel.load(root), client


def test_fixed_effect_scores_equal_batch_scoring(served):
    kind, model, client = served
    test = _test_frame()
    reply = client.post("/score", json={"rows": _rows(test)})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    reference = model.score(test)
    for name in ("global", "per_user", "per_item", "total"):
        got = body["scores"][name] if name != "total" else body["total"]
        np.testing.assert_allclose(got, reference[name], rtol=0, atol=1e-12)
    assert body["scores"]["per_user"][3] == 0.0 and body["scores"]["per_item"][2] == 0.0
    assert client.get("/model").json()["coordinates"][0]["type"] == kind


def test_fixed_effect_scores_equal_batch_scoring_in_small_requests(served):
    _, model, client = served
    test = _test_frame()
    for start in range(0, 12, 4):  # the same rows, four at a time
        part = test.iloc[start : start + 4].reset_index(drop=True)
        body = client.post("/score", json={"rows": _rows(part)}).json()
        np.testing.assert_allclose(body["total"], model.score(part)["total"], rtol=0, atol=1e-12)


def test_text_and_bags_are_checked(served):
    _, _, client = served
    row = _rows(_test_frame().head(1))[0]
    reply = client.post("/score", json={"rows": [{**row, "title": 5}]})
    if "title" in client.get("/model").json()["inputs"]["texts"]:
        assert reply.status_code == 422 and reply.json()["field"] == "rows[0].title"
    reply = client.post("/score", json={"rows": [{**row, "terms": [{"value": 1.0}]}]})
    assert reply.status_code == 422 and reply.json()["field"] == "rows[0].terms[0].name"

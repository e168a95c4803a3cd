"""The scoring service: endpoints, equality with batch scoring, bad requests, hot swaps.

The reference for every score is batch scoring, ``GDMixModel.score`` on a DataFrame of the
same rows; the service must agree to 1e-12 (it computes the same sums in the same order,
so in practice exactly).
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

import gdmix
from gdmix.cli import main as cli_main
from gdmix.config import parse_config
from gdmix.effects.random_table import ARROW_COPY, write_arrow_copy
from gdmix.serving import ModelService, load_serving_model
from gdmix.serving.app import create_app

TAGS = [f"t{i}" for i in range(300)]  # per_item's shard is wider than DENSE_MAX_FEATURES


def _frame(seed: int, n: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 40, n)
    item = np.array([f"i{k:02d}" for k in rng.integers(0, 25, n)])
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], n)
    size = rng.integers(1, 4, n)
    tags = [
        [{"name": "tag", "term": t, "value": float(v)}
         for t, v in zip(rng.choice(TAGS, k), rng.uniform(0.5, 2.0, k), strict=True)]
        for k in rng.integers(0, 4, n)
    ]  # fmt: skip
    prior = rng.normal(0, 0.3, n)
    logit = prior + 0.8 * x1 - 0.4 * x2 + (color == "red") + 0.3 * (user % 5 - 2)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"uid": np.arange(n), "user": user, "item": item, "x1": x1, "x2": x2,
                         "color": color, "size": size, "tags": tags, "prior": prior,
                         "label": y})  # fmt: skip


def _config() -> gdmix.GDMixConfig:
    return parse_config(
        {
            "data": {"uid": "uid", "offset": "prior"},
            "coordinates": [
                {"name": "global", "type": "fixed", "l2": 1.0, "features": {
                    "numeric": ["x1", "x2"], "categorical": ["color", "size"], "bags": ["tags"]}},
                {"name": "per_user", "type": "random", "entity": "user", "l2": 1.0,
                 "features": {"numeric": ["x1"], "categorical": ["color"]}},
                {"name": "per_item", "type": "random", "entity": "item", "l2": 1.0,
                 "features": {"bags": ["tags"]}},
            ],
            "training": {"n_passes": 1, "progress": False},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def model() -> gdmix.GDMixModel:
    model = gdmix.fit(_config(), _frame(0))
    assert model["per_item"].features.n_features > 256  # sparse coefficient rows
    return model


@pytest.fixture(scope="module")
def store(model: gdmix.GDMixModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serving") / "store"
    gdmix.ModelStore(root).publish(model.write_into, promote=True)
    return root


@pytest.fixture(scope="module")
def client(store: Path):
    service = ModelService(store, poll_interval=0)
    with TestClient(create_app(service)) as c:
        yield c


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    cols = ["uid", "user", "item", "x1", "x2", "color", "size", "tags", "prior"]
    return [{c: _plain(r[c]) for c in cols if c in r} for r in frame.to_dict("records")]


def _test_frame() -> pd.DataFrame:
    test = _frame(1, 60)
    test["color"] = test["color"].astype(object)
    test.loc[0, "user"] = 999  # unseen user
    test.loc[1, "item"] = "zzz"  # unseen item
    test.loc[2, "color"] = "purple"  # unseen level
    test.loc[3, "color"] = None  # null level
    test.loc[4, "size"] = 7  # unseen numeric level
    test.at[5, "tags"] = [{"name": "tag", "term": "never", "value": 3.0},
                          {"name": "tag", "term": "t1", "value": 1.0},
                          {"name": "tag", "term": "t1", "value": 0.5}]  # fmt: skip
    test.at[6, "tags"] = []
    test.at[7, "tags"] = [{"name": "tag", "term": TAGS[252], "value": 2.0}]
    return test


def _check_equal(response: dict[str, Any], reference: pd.DataFrame, names: list[str]) -> None:
    for name in names:
        np.testing.assert_allclose(response["scores"][name], reference[name], rtol=0, atol=1e-12)
    np.testing.assert_allclose(response["total"], reference["total"], rtol=0, atol=1e-12)
    expected = 1 / (1 + np.exp(-reference["total"].to_numpy()))
    np.testing.assert_allclose(response["probability"], expected, rtol=1e-12, atol=0)


# -- endpoints ----------------------------------------------------------------------------


def test_score_equals_batch_scoring_with_unseen_entities_and_levels(client, model):
    test = _test_frame()
    reply = client.post("/score", json={"rows": _rows(test)})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    reference = model.score(test)
    _check_equal(body, reference, ["global", "per_user", "per_item"])
    np.testing.assert_array_equal(body["offset"], test["prior"])
    assert body["uid"] == test["uid"].tolist()
    assert body["version"] == 1
    assert body["scores"]["per_user"][0] == 0.0 and body["scores"]["per_item"][1] == 0.0


def test_each_row_alone_scores_as_in_the_batch(client, model):
    test = _test_frame().head(12)
    reference = model.score(test)
    for i, row in enumerate(_rows(test)):
        body = client.post("/score", json={"rows": [row]}).json()
        assert abs(body["total"][0] - reference["total"].iloc[i]) <= 1e-12


def test_context_fields_are_shared_by_every_row(client, model):
    test = _test_frame().head(10).copy()
    test["user"] = 3
    test["x1"] = 0.25
    rows = [{k: v for k, v in r.items() if k not in ("user", "x1")} for r in _rows(test)]
    body = client.post("/score", json={"context": {"user": 3, "x1": 0.25}, "rows": rows}).json()
    _check_equal(body, model.score(test), ["global", "per_user", "per_item"])


def test_entity_ids_of_other_types_are_the_same_entity(client, model):
    test = _test_frame().head(3)
    rows = _rows(test)
    base = client.post("/score", json={"rows": rows}).json()
    for change in (float, str):
        other = [{**r, "user": change(r["user"])} for r in rows]
        body = client.post("/score", json={"rows": other}).json()
        assert body["scores"]["per_user"] == base["scores"]["per_user"]
    # a string-keyed random effect takes numbers as their decimal text; a non-integer
    # string never matches an integer-keyed one (as in batch scoring)
    odd = [{**rows[0], "user": "3x"}, {**rows[0], "user": 3.5}, {**rows[0], "item": 5}]
    body = client.post("/score", json={"rows": odd}).json()
    assert body["scores"]["per_user"][:2] == [0.0, 0.0]
    frame = test.head(1).copy()
    frame = pd.concat([frame] * 3, ignore_index=True)
    frame["user"] = pd.Series(["3x", 3.5, rows[0]["user"]], dtype=object)
    frame["item"] = pd.Series([rows[0]["item"], rows[0]["item"], 5], dtype=object)
    reference = model.score(frame)
    assert body["scores"]["per_item"][2] == reference["per_item"].iloc[2] == 0.0


def test_healthz_model_and_metrics(client, store):
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/model").json()
    assert info["version"] == 1
    assert [c["name"] for c in info["coordinates"]] == ["global", "per_user", "per_item"]
    per_item = info["coordinates"][2]
    assert per_item["coefficients"] == "sparse" and per_item["source"] == "arrow"
    assert info["coordinates"][1]["entity_key"] == "int" and per_item["entity_key"] == "str"
    assert info["inputs"]["offset"] == "prior" and info["inputs"]["entities"] == ["item", "user"]
    assert info["lineage"]["mode"] == "train"
    client.post("/score", json={"rows": []})
    text = client.get("/metrics").text
    assert 'gdmix_requests_total{endpoint="/score",status="400"}' in text
    assert "gdmix_model_version 1" in text
    assert "gdmix_model_swaps_total 0" in text and "gdmix_model_load_failures_total 0" in text
    assert 'gdmix_request_duration_seconds_bucket{endpoint="/score",le="+Inf"}' in text
    counts = [line for line in text.splitlines() if line.startswith("gdmix_request_duration")]
    assert counts and all(not math.isnan(float(line.split()[-1])) for line in counts)


# -- bad requests: one test per class, each a 4xx naming the field ---------------------------


def _good_row() -> dict[str, Any]:
    return _rows(_test_frame().head(1))[0]


def _with(**changes: Any):
    return lambda row: {"rows": [{**row, **changes}]}


def _text_with(field: str, literal: str):
    """A body whose ``field`` is a JSON literal that json.dumps would not write."""

    def build(row: dict[str, Any]) -> bytes:
        text = json.dumps({"rows": [{**row, field: "@@"}]})
        return text.replace('"@@"', literal).encode()

    return build


def _without(field: str):
    return lambda row: {"rows": [{k: v for k, v in row.items() if k != field}]}


BAD = {
    "not_json": (lambda row: b"{rows: [", 400, "body", "not valid JSON"),
    "not_an_object": (lambda row: [row], 400, "body", "must be a JSON object"),
    "no_rows": (lambda row: {"context": row}, 400, "rows", "missing"),
    "unknown_top_level_field": (lambda row: {"rows": [row], "row": row}, 400, "row", "unknown"),
    "row_not_an_object": (lambda row: {"rows": [5]}, 400, "rows[0]", "must be an object"),
    "missing_feature": (_without("x2"), 422, "rows[0].x2", "missing"),
    "numeric_of_wrong_type": (_with(x1="high"), 422, "rows[0].x1", "must be a number"),
    "categorical_of_wrong_type": (_with(color=3), 422, "rows[0].color", "must be a string"),
    "nan": (_text_with("x2", "NaN"), 422, "rows[0].x2", "finite"),
    "infinity": (_text_with("x1", "1e999"), 422, "rows[0].x1", "finite"),
    "entity_id_of_wrong_type": (_with(user=[1]), 422, "rows[0].user", "integer or a string"),
    "null_entity_id": (_with(user=None), 422, "rows[0].user", "integer or a string"),
    "bad_bag_item": (_with(tags=[{"name": "tag", "value": "x"}]), 422, "rows[0].tags[0].value",
                     "must be a number"),
    "offset_out_of_range": (_with(prior=1e3), 422, "rows[0].prior", "within +-100"),
    "field_in_row_and_context": (lambda row: {"rows": [row], "context": {"x1": 1.0}}, 422,
                                 "rows[0].x1", "both"),
    "too_many_rows": (lambda row: {"rows": [row] * 10_001}, 413, "rows", "at most"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_request_is_a_4xx_naming_the_field(client, case):
    build, status, field, words = BAD[case]
    body = build(_good_row())
    if isinstance(body, bytes):
        reply = client.post("/score", content=body)
    else:
        reply = client.post("/score", json=body)
    assert reply.status_code == status, reply.text
    payload = reply.json()
    assert payload["field"] == field
    assert words in payload["error"] and field in payload["error"]


def test_garbage_bodies_never_get_a_500(client):
    row = _good_row()
    rng = np.random.default_rng(3)
    values: list[Any] = [None, True, -1, 2.5, "", "x", [], {}, [None], {"a": 1}, 1e308, -0.0]
    bodies = [b"", b"null", b"[]", b'"rows"', b"\xff\xfe", b'{"rows": {}}', b'{"rows": [[]]}']
    for _ in range(150):
        key = str(rng.choice(list(row)))
        value = values[rng.integers(len(values))]
        bodies.append(json.dumps({"rows": [{**row, key: value}]}).encode())
    for body in bodies:
        reply = client.post("/score", content=body)
        assert reply.status_code < 500, (body, reply.text)
        if reply.status_code >= 400:
            assert reply.json()["field"]


# -- loading: Arrow copy, Parquet fallback ---------------------------------------------------


def test_folder_without_arrow_copy_serves_from_parquet(model, tmp_path):
    path = model.save(tmp_path / "m")
    served = load_serving_model(path)
    for name in ("per_user", "per_item"):
        (path / "coordinates" / name / ARROW_COPY).unlink()
    fallback = load_serving_model(path)
    assert {s.table.source for s in fallback.scorers[1:]} == {"parquet"}
    assert {s.table.source for s in served.scorers[1:]} == {"arrow"}
    rows = _rows(_test_frame())
    a, b = served.score_rows(rows), fallback.score_rows(rows)
    np.testing.assert_array_equal(a.total, b.total)


def test_stale_arrow_copy_is_ignored(model, tmp_path):
    path = model.save(tmp_path / "m")
    table = path / "coordinates" / "per_user" / "coefficients.parquet"
    frame = pd.read_parquet(table)
    frame["intercept"] += 1.0  # the Parquet table is the format of record
    frame.to_parquet(table)
    served = load_serving_model(path)
    assert served.scorers[1].table.source == "parquet"
    test = _test_frame()
    reference = gdmix.GDMixModel.load(path).score(test)
    np.testing.assert_allclose(served.score_rows(_rows(test)).total, reference["total"],
                               rtol=0, atol=1e-12)  # fmt: skip


# -- hot swap ------------------------------------------------------------------------------


def _shifted(model: gdmix.GDMixModel, shift: float):
    def write(folder: Path) -> None:
        coord = model["global"]
        saved = coord.intercept
        coord.intercept = saved + shift
        try:
            model.write_into(folder)
        finally:
            coord.intercept = saved

    return write


def test_swap_during_requests_drops_nothing(model, tmp_path):
    import uvicorn

    root = tmp_path / "store"
    store = gdmix.ModelStore(root)
    store.publish(_shifted(model, 0.0), promote=True)
    service = ModelService(root, poll_interval=0.05)
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    rows = _rows(_test_frame().head(10))
    base = model.score(_test_frame().head(10))["total"].to_numpy()
    results: list[tuple[int, Any]] = []
    stop = threading.Event()

    def hammer() -> None:
        import httpx2 as httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            while not stop.is_set():
                reply = http.post("/score", json={"rows": rows})
                results.append((reply.status_code, reply.json()))

    clients = [threading.Thread(target=hammer) for _ in range(3)]
    for c in clients:
        c.start()
    try:
        for k in range(1, 7):  # version k+1 adds k to every logit
            time.sleep(0.15)
            store.publish(_shifted(model, float(k)), promote=True)
        deadline = time.time() + 30
        while service.model.version != 7 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        stop.set()
        for c in clients:
            c.join()
        server.should_exit = True
        thread.join(timeout=30)
    assert service.model.version == 7 and service.swaps == 6 and service.load_failures == 0
    assert results and all(status == 200 for status, _ in results)
    versions = set()
    for _, body in results:  # every answer comes whole from one version
        versions.add(body["version"])
        np.testing.assert_allclose(body["total"], base + (body["version"] - 1), atol=1e-12)
    assert len(versions) >= 2


def test_broken_version_is_refused_and_the_old_one_keeps_serving(model, tmp_path):
    root = tmp_path / "store"
    store = gdmix.ModelStore(root)
    store.publish(model.write_into, promote=True)
    service = ModelService(root, poll_interval=0)
    rows = _rows(_test_frame().head(4))
    with TestClient(create_app(service)) as http:
        before = http.post("/score", json={"rows": rows}).json()

        def broken(folder: Path) -> None:  # a NaN in per_user's memory-mapped coefficients
            model.write_into(folder)
            arrays = model["per_user"].arrays()
            arrays.coef = arrays.coef.copy()
            arrays.coef[3, 0] = np.nan
            write_arrow_copy(arrays, folder / "coordinates" / "per_user" / "coefficients.parquet")

        store.publish(broken, promote=True)
        reply = http.post("/reload")
        assert reply.status_code == 409
        assert "NaN" in reply.json()["error"] and reply.json()["version"] == 1
        assert service.reload().status == "refused"  # not retried until the pointer moves
        assert service.load_failures == 1
        after = http.post("/score", json={"rows": rows}).json()
        assert after == before
        text = http.get("/metrics").text
        assert "gdmix_model_load_failures_total 1" in text and "gdmix_model_version 1" in text

        def no_table(folder: Path) -> None:
            model.write_into(folder)
            (folder / "coordinates" / "per_item" / "coefficients.parquet").unlink()

        def torn(folder: Path) -> None:
            model.write_into(folder)
            table = folder / "coordinates" / "per_user" / ARROW_COPY
            table.write_bytes(table.read_bytes()[:-100])

        for write in (no_table, torn):
            store.publish(write, promote=True)
            reply = http.post("/reload")
            assert reply.status_code == 409 and "coordinates/per_" in reply.json()["error"]
        store.publish(_shifted(model, 1.0), promote=True)
        assert http.post("/reload").json()["status"] == "swapped"
        body = http.post("/score", json={"rows": rows}).json()
        assert body["version"] == 5
        np.testing.assert_allclose(body["total"], np.add(before["total"], 1.0), atol=1e-12)


def test_model_folder_replaced_by_a_save_is_swapped_in(model, tmp_path):
    path = model.save(tmp_path / "m")
    service = ModelService(path, poll_interval=0)
    service.start()
    rows = _rows(_test_frame().head(3))
    first = service.model.score_rows(rows).total
    write = _shifted(model, 2.0)
    gdmix.model.write_model_directory(path, write)
    assert service.reload().status == "swapped"
    np.testing.assert_allclose(service.model.score_rows(rows).total, first + 2.0, atol=1e-12)
    assert service.model.version is None and service.swaps == 1


def test_cli_serve_refuses_a_missing_store(tmp_path, capsys):
    assert cli_main(["serve", "--store", str(tmp_path / "nothing")]) == 2
    assert "is not a model store" in capsys.readouterr().err

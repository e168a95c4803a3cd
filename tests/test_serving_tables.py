"""Lookup tables of the scoring service against plain Python references, the Arrow copy of
random-effect tables against the Parquet table, and ``gdmix serve`` end to end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

import gdmix
from gdmix.effects.random_table import (
    ARROW_COPY,
    RandomEffectArrays,
    open_arrow_copy,
    read_coefficients,
    write_coefficients,
)
from gdmix.serving.tables import EntityTable, canonical_id, level_string


def test_integer_entity_table_finds_every_id_and_nothing_else():
    rng = np.random.default_rng(0)
    ids = np.unique(np.concatenate([rng.integers(-(2**62), 2**62, 5000),
                                    [0, -1, 2**63 - 1, -(2**63)]]))  # fmt: skip
    rng.shuffle(ids)
    table = EntityTable.from_ids(ids)
    position = {int(v): i for i, v in enumerate(ids)}
    probes = [*ids[:300].tolist(), *rng.integers(-(2**62), 2**62, 300).tolist(), 2**63 - 1]
    found = table.rows(probes, np.ones(len(probes), dtype=bool))
    assert found.tolist() == [position.get(p, -1) for p in probes]
    ok = np.ones(3, dtype=bool)
    ok[1] = False  # a key that is not an integer matches nothing
    assert table.rows([int(ids[0]), int(ids[0]), 12345], ok).tolist()[:2] == [position[ids[0]], -1]


def test_string_entity_table_compares_bytes_not_only_hashes():
    ids = ["", "a", "b", "ab", "ba", "é", "e\u0301", "user-000042", "日本", "a" * 300]
    ids += [f"u{i}" for i in range(3000)]
    table = EntityTable.from_ids(pa.array(ids, type=pa.string()))
    assert table.kind == "str" and len(table) == len(ids)
    probes = [*ids, "c", "user-42", "u3000", "A", " a"]
    found = table.rows(probes, np.ones(len(probes), dtype=bool))
    assert found.tolist() == [*range(len(ids)), -1, -1, -1, -1, -1]
    assert table.id_at(5) == "é"


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="appears more than once"):
        EntityTable.from_ids(np.array([3, 1, 3]))
    with pytest.raises(ValueError, match="'x' appears more than once"):
        EntityTable.from_ids(pd.Index(["x", "y", "x"]))


@pytest.mark.parametrize(
    ("value", "kind", "key"),
    [(42, "int", (42, True)), (42.0, "int", (42, True)), ("42", "int", (42, True)),
     ("042", "int", (0, False)), ("4.2e1", "int", (0, False)), (4.5, "int", (0, False)),
     (2**63, "int", (0, False)), ("-7", "int", (-7, True)), (42, "str", ("42", True)),
     (42.0, "str", ("42", True)), (4.5, "str", ("4.5", True)), ("x", "str", ("x", True))],
)  # fmt: skip
def test_canonical_id_matches_batch_keys(value, kind, key):
    from gdmix.data.entity_keys import canonical_keys

    assert canonical_id(value, kind) == key
    keys, ok = canonical_keys(pd.Series([value], dtype=object), kind)
    assert bool(ok[0]) == key[1]
    if key[1]:
        assert keys[0] == key[0]


def test_level_string_matches_feature_encoding():
    from gdmix.data.features import _category_strings

    values = [3, 3.0, 3.5, "3", True, None, -0.0, 2.0**52]
    for v in values:
        expected = _category_strings(pd.Series([v]))[0]
        assert level_string(v) == expected, v


@pytest.mark.parametrize("layout", ["dense", "sparse", "none"])
def test_arrow_copy_holds_the_parquet_tables_numbers(tmp_path, layout):
    rng = np.random.default_rng(1)
    n = 50
    if layout == "dense":
        coef = rng.normal(size=(n, 4))
        coef[rng.random((n, 4)) < 0.3] = 0.0
    elif layout == "sparse":
        coef = sp.random(n, 400, density=0.02, format="csr", random_state=2)
    else:
        coef = np.zeros((n, 0))
    ids = pd.Index([f"e{i}" for i in range(n)], dtype=object)
    arrays = RandomEffectArrays(ids, np.arange(n), rng.normal(size=n), coef)
    write_coefficients(arrays, tmp_path / "coefficients.parquet")
    mapped = open_arrow_copy(tmp_path, coef.shape[1])
    parquet = read_coefficients(tmp_path / "coefficients.parquet", coef.shape[1])
    assert mapped is not None and mapped.layout == layout
    assert mapped.entity_ids.to_pylist() == parquet.entity_ids.tolist()
    np.testing.assert_array_equal(mapped.intercept, parquet.intercept)
    if layout == "dense":
        np.testing.assert_array_equal(mapped.coef, parquet.coef)
    elif layout == "sparse":
        rebuilt = sp.csr_matrix((mapped.values, mapped.indices, mapped.indptr), shape=coef.shape)
        np.testing.assert_array_equal(rebuilt.toarray(), parquet.coef.toarray())
    assert not mapped.intercept.flags.writeable  # a view of the mapped file


def test_streamed_parts_get_no_arrow_copy(tmp_path):
    parts = tmp_path / "coefficients.parquet"
    parts.mkdir()
    arrays = RandomEffectArrays(pd.Index([1, 2]), np.ones(2), np.zeros(2), np.zeros((2, 1)))
    write_coefficients(arrays, parts / "part-00000.parquet")
    assert sorted(p.name for p in parts.iterdir()) == ["part-00000.parquet"]
    assert not (tmp_path / ARROW_COPY).exists() and open_arrow_copy(tmp_path, 1) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gdmix_serve_command_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"user": rng.integers(0, 20, n), "x": rng.normal(size=n),
                          "label": rng.integers(0, 2, n)})  # fmt: skip
    config = gdmix.config.parse_config({
        "coordinates": [{"name": "global", "type": "fixed", "features": {"numeric": ["x"]}},
                        {"name": "per_user", "type": "random", "entity": "user"}],
        "training": {"progress": False}})  # fmt: skip
    model = gdmix.fit(config, frame)
    store = tmp_path / "store"
    gdmix.ModelStore(store).publish(model.write_into, promote=True)
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "gdmix", "serve", "--store", str(store), "--port", str(port),
               "--poll-interval", "0.1"]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
        body = json.dumps({"rows": [{"user": 3, "x": 0.5}, {"user": "3", "x": -1.0}]}).encode()
        request = urllib.request.Request(f"{url}/score", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            got = json.loads(reply.read())
        expected = model.score(pd.DataFrame({"user": [3, 3], "x": [0.5, -1.0]}))
        np.testing.assert_allclose(got["total"], expected["total"], rtol=0, atol=1e-12)
        gdmix.ModelStore(store).publish(model.write_into, promote=True)
        for _ in range(300):
            with urllib.request.urlopen(f"{url}/model", timeout=5) as reply:
                if json.loads(reply.read())["version"] == 2:
                    break
            time.sleep(0.05)
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            assert "gdmix_model_swaps_total 1" in reply.read().decode()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "serving version 1" in out and "Traceback" not in out
    assert Path(store / "versions" / "000002" / "coordinates" / "per_user" / ARROW_COPY).is_file()

"""The Dask engine on a 2-worker LocalCluster equals the local engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gdmix
from gdmix.cli import main
from gdmix.config import parse_config
from gdmix.engines.dask_engine import fit_dask


@pytest.fixture
def client(dask_client):
    """The session's LocalCluster (tests/conftest.py)."""
    return dask_client


def _frame(seed: int, n: int = 12000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 400, n), rng.integers(0, 120, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["a", "b", "c"], n)
    z = (0.5 * x1 - 0.4 * x2 + rng.normal(0, 1, 400)[user] + rng.normal(0, 0.8, 120)[item]
         + rng.normal(0, 0.5, 400)[user] * x2 + (color == "a"))  # fmt: skip
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return pd.DataFrame({"uid": np.arange(n), "user": user, "item": item.astype(str),
                         "x1": x1, "x2": x2, "color": color, "label": y})  # fmt: skip


def _config(**training) -> gdmix.GDMixConfig:
    return parse_config({
        "data": {"uid": "uid"},
        "coordinates": [
            {"name": "fe", "type": "fixed", "l2": 0.5,
             "features": {"numeric": ["x1", "x2"], "categorical": ["color"]}},
            {"name": "per_user", "type": "random", "entity": "user", "l2": 2.0,
             "features": {"numeric": ["x2"]}, "variance": "simple"},
            {"name": "per_item", "type": "random", "entity": "item", "l2": 1.0},
        ],
        "training": {"n_passes": 3, "progress": False, "early_stopping": False, **training},
    })  # fmt: skip


def _max_diff(a: gdmix.GDMixModel, b: gdmix.GDMixModel) -> float:
    worst = max(
        np.abs(a["fe"].coef - b["fe"].coef).max(), abs(a["fe"].intercept - b["fe"].intercept)
    )
    for name in ("per_user", "per_item"):
        ra, rb = a[name], b[name]
        assert ra.entity_ids.equals(rb.entity_ids)
        worst = max(worst, np.abs(ra.coef - rb.coef).max(initial=0.0),
                    np.abs(ra.intercept - rb.intercept).max())  # fmt: skip
    return worst


def test_dask_equals_local_engine(client):
    frame = _frame(0)
    train, val = frame.iloc[:10000].reset_index(drop=True), frame.iloc[10000:]
    local = gdmix.fit(_config(), train, val)
    remote = fit_dask(_config(), train, val, client=client)
    assert _max_diff(local, remote) <= 1e-8
    np.testing.assert_allclose(remote["per_user"].variance, local["per_user"].variance, atol=1e-8)
    assert remote.metrics["validation"]["auc"] == pytest.approx(local.metrics["validation"]["auc"])
    assert [r["coordinate"] for r in remote.history] == [r["coordinate"] for r in local.history]


def test_parquet_input_scores_output_and_model_format(client, tmp_path):
    frame = _frame(1)
    folder = tmp_path / "train"
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 3)):
        pq.write_table(pa.Table.from_pandas(frame.iloc[rows], preserve_index=False),
                       folder / f"part-{i}.parquet")  # fmt: skip
    config = _config(dask={"scores_output": str(tmp_path / "scores")}, n_passes=2)
    remote = fit_dask(config, str(folder), client=client)
    local = gdmix.fit(_config(n_passes=2), frame)
    assert _max_diff(local, remote) <= 1e-8
    # The model is the same format: saved, loaded and scored by the local engine.
    remote.save(tmp_path / "model")
    loaded = gdmix.GDMixModel.load(tmp_path / "model")
    expected = local.score(frame)
    got = loaded.score(frame)
    np.testing.assert_allclose(got["total"], expected["total"], atol=1e-8)
    # Per-row training scores written by the workers, keyed by uid.
    written = pq.read_table(tmp_path / "scores").to_pandas().sort_values("uid")
    assert len(written) == len(frame)
    np.testing.assert_allclose(written["total"], expected["total"], atol=1e-8)
    np.testing.assert_allclose(written["per_user"], expected["per_user"], atol=1e-8)


def test_hive_partitioned_folder_reads_through_dask(client, tmp_path):
    # Plain files are read by gdmix's reader on the workers; a folder whose partition keys
    # live in its folder names goes through dask's read_parquet, with the same model.
    frame = _frame(2).assign(day=lambda f: f["uid"] % 3)
    pq.write_to_dataset(pa.Table.from_pandas(frame, preserve_index=False),
                        tmp_path / "hive", partition_cols=["day"])  # fmt: skip
    remote = fit_dask(_config(n_passes=2), str(tmp_path / "hive"), client=client)
    local = gdmix.fit(_config(n_passes=2), str(tmp_path / "hive"))
    assert _max_diff(local, remote) <= 1e-8


def test_locked_fixed_effect_on_dask(client, tmp_path):
    frame = _frame(2, n=5000)
    gdmix.fit(_config(n_passes=1), frame).save(tmp_path / "first")
    raw = _config(n_passes=1).model_dump()
    raw["coordinates"][0].update(locked=True, init_model=str(tmp_path / "first"))
    remote = fit_dask(parse_config(raw), frame, client=client)
    local = gdmix.fit(parse_config(raw), frame)
    first = gdmix.GDMixModel.load(tmp_path / "first")
    np.testing.assert_array_equal(remote["fe"].coef, first["fe"].coef)
    assert _max_diff(local, remote) <= 1e-8


def test_dask_rejects_what_it_cannot_do(client):
    frame = _frame(3, n=2000)
    raw = _config().model_dump()
    raw["coordinates"][1]["l2"] = [1.0, 2.0]
    with pytest.raises(gdmix.ConfigError, match="one l2"):
        fit_dask(parse_config(raw), frame, client=client)
    bad = frame.copy()
    bad.loc[1500, "label"] = 2
    with pytest.raises(gdmix.DataError, match="0/1"):
        fit_dask(_config(), bad, client=client)


def test_cli_engine_dask(tmp_path, capsys):
    frame = _frame(4, n=4000)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "t.parquet")
    (tmp_path / "job.yaml").write_text(
        "data: {train: t.parquet, uid: uid}\n"
        "coordinates:\n"
        "  - {name: fe, type: fixed, features: {numeric: [x1, x2]}}\n"
        "  - {name: per_user, type: random, entity: user}\n"
        "training: {n_passes: 1}\n"
        "output: model\n"
    )
    code = main(["-q", "train", "--config", str(tmp_path / "job.yaml"), "--engine", "dask",
                 "--n-workers", "1"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert '"engine": "dask"' in out
    assert (tmp_path / "model" / "manifest.json").exists()
    assert main(["train", "--config", str(tmp_path / "job.yaml"), "--engine", "dask",
                 "--n-workers", "0"]) == 2  # fmt: skip


def test_local_cluster_listens_on_loopback_only(client) -> None:
    addresses = [client.scheduler.address, *client.scheduler_info()["workers"]]
    assert addresses and all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses


@pytest.mark.parametrize("mode", ["partial", "warm", "incremental"])
def test_refresh_on_dask_equals_local(client, tmp_path, mode) -> None:
    """Locked fixed effect, random effects warm-started, refit from zero, or with the
    previous model as the prior: the Dask engine equals the local one."""
    frame = _frame(5, n=6000)
    first = gdmix.fit(_config(n_passes=1), frame.iloc[:4000]).save(tmp_path / "first")
    new = frame.iloc[4000:]
    new = new[new["user"] % 7 != 0].reset_index(drop=True)  # some entities without rows
    raw = _config(n_passes=1).model_dump()
    raw["coordinates"][0].update(locked=True, init_model=str(first))
    for c in raw["coordinates"][1:]:
        c.update(init_model=str(first), warm_start=mode != "partial",
                 incremental=mode == "incremental" and c["variance"] != "none")  # fmt: skip
    local = gdmix.fit(parse_config(raw), new)
    remote = fit_dask(parse_config(raw), new, client=client)
    assert _max_diff(local, remote) <= 1e-8
    old = gdmix.GDMixModel.load(first)
    absent = sorted(set(old["per_user"].entity_ids) - set(new["user"]))
    assert absent and set(absent) <= set(remote["per_user"].entity_ids)
    for model in (local, remote):  # absent entities keep their previous model
        pos_new = model["per_user"].entity_ids.get_indexer(absent)
        pos_old = old["per_user"].entity_ids.get_indexer(absent)
        np.testing.assert_array_equal(
            model["per_user"].intercept[pos_new], old["per_user"].intercept[pos_old]
        )


def test_refresh_command_on_the_dask_engine(tmp_path, capsys) -> None:
    from gdmix.refresh import refresh

    frame = _frame(6, n=4000)
    first = gdmix.fit(_config(n_passes=1), frame.iloc[:3000]).save(tmp_path / "first")
    local = refresh(first, frame.iloc[3000:], mode="warm", output=tmp_path / "local")
    remote = refresh(first, frame.iloc[3000:], mode="warm", output=tmp_path / "remote",
                     engine="dask")  # fmt: skip
    assert _max_diff(local.model, remote.model) <= 1e-8
    assert remote.model.metrics["engine"] == "dask"

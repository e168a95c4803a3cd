"""gdmix refresh: frozen coordinates kept, random effects refit, lineage, guard, expiry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.optimize

import gdmix
from gdmix.cli import main
from gdmix.config import parse_config
from gdmix.errors import ConfigError, DataError, ModelDirectoryError
from gdmix.model import GDMixModel
from gdmix.refresh import refresh
from gdmix.store import ModelStore

COORDS = [
    {"name": "global", "type": "fixed", "l2": 1.0,
     "features": {"numeric": ["x1", "x2"], "categorical": ["color"]}},
    {"name": "per_user", "type": "random", "entity": "user_id", "l2": 2.0,
     "features": {"numeric": ["x1"]}, "variance": "full"},
    {"name": "per_item", "type": "random", "entity": "item_id", "l2": 2.0, "variance": "full"},
]  # fmt: skip


def _config(coords=COORDS, **training) -> gdmix.GDMixConfig:
    return parse_config({"data": {"uid": "uid"}, "coordinates": coords,
                         "training": {"progress": False, **training}})  # fmt: skip


@pytest.fixture
def windows(toy_job):
    frame = pd.concat([toy_job.train, toy_job.validation, toy_job.test], ignore_index=True)
    frame["day"] = np.repeat(np.arange(10), len(frame) // 10 + 1)[: len(frame)]
    old, new, val = frame.iloc[:1500], frame.iloc[1500:2400], frame.iloc[2400:]
    new = new[new["user_id"] % 5 != 0].reset_index(drop=True)  # some users absent
    store = ModelStore(toy_job.root / "store")
    model = gdmix.fit(_config(), old.reset_index(drop=True))
    store.publish(model.write_into, promote=True)
    return store, model, new, val.reset_index(drop=True)


def _table(model: GDMixModel, name: str) -> pd.DataFrame:
    coord = model[name]
    arrays = coord.arrays()
    return pd.DataFrame({"entity": arrays.entity_ids, "b": arrays.intercept,
                         "w": list(np.atleast_2d(arrays.coef))}).set_index("entity")  # fmt: skip


def test_partial_refresh_equals_a_fresh_fit_with_the_fixed_effect_locked(windows) -> None:
    store, old_model, new, _ = windows
    result = refresh(store.root, new, mode="partial")
    assert result.version == 2 and result.promoted and store.current() == 2
    refreshed = GDMixModel.load(store.root)
    # Reference: the random effects trained from nothing on the new data, FE locked.
    coords = [dict(COORDS[0], locked=True, init_model=str(store.path(1))), *COORDS[1:]]
    fresh = gdmix.fit(_config(coords), new)
    for name in ("per_user", "per_item"):
        got, ref, old = _table(refreshed, name), _table(fresh, name), _table(old_model, name)
        seen = ref.index
        np.testing.assert_allclose(got.loc[seen, "b"], ref["b"], atol=1e-7)
        np.testing.assert_allclose(np.stack(got.loc[seen, "w"]), np.stack(ref["w"]), atol=1e-7)
        absent = old.index.difference(seen)
        assert len(absent) > 0 if name == "per_user" else True
        # Entities absent from the new data keep their old model exactly.
        np.testing.assert_array_equal(got.loc[absent, "b"], old.loc[absent, "b"])
    # The fixed effect is frozen: the same scores, its files hard links of the parent's.
    np.testing.assert_array_equal(refreshed["global"].coef, old_model["global"].coef)
    a = store.path(1) / "coordinates" / "global" / "coefficients.parquet"
    b = store.path(2) / "coordinates" / "global" / "coefficients.parquet"
    assert os.stat(a).st_ino == os.stat(b).st_ino


def test_warm_refresh_reaches_the_same_optimum(windows, tmp_path) -> None:
    store, _, new, val = windows
    partial = refresh(store.root, new, mode="partial", output=tmp_path / "p")
    warm = refresh(store.root, new, mode="warm", output=tmp_path / "w")
    np.testing.assert_allclose(
        partial.model.score(val)["total"], warm.model.score(val)["total"], atol=1e-6
    )
    assert store.current() == 1  # outputs to folders leave the store alone


def test_incremental_refresh_uses_the_old_model_as_prior(windows) -> None:
    store, old_model, new, _ = windows
    result = refresh(store.root, new, mode="incremental", coordinates=["per_user"])
    model = result.model
    old = old_model["per_user"]
    coord = model["per_user"]
    # Independent check, entity by entity: the MAP estimate under the old posterior as
    # prior, with every other coordinate's score as offset.
    scores = model.score(new)
    offset = (scores["total"] - scores["per_user"]).to_numpy()
    for user in sorted(new["user_id"].unique())[:4]:
        rows = (new["user_id"] == user).to_numpy()
        x, y, o = new.loc[rows, "x1"].to_numpy(), new.loc[rows, "label"].to_numpy(), offset[rows]
        k = old.entity_ids.get_loc(user)
        mean = np.array([old.coef[k, 0], old.intercept[k]])
        prec = 1.0 / np.array([old.variance[k, 0], old.intercept_variance[k]])

        def fun(t, x=x, y=y, o=o, mean=mean, prec=prec):
            z = t[0] * x + t[1] + o
            p = 1 / (1 + np.exp(-z))
            f = np.sum(np.logaddexp(0, z) - y * z) + 0.5 * np.sum(prec * (t - mean) ** 2)
            g = np.array([(p - y) @ x, (p - y).sum()]) + prec * (t - mean)
            return f, g

        ref = scipy.optimize.minimize(fun, mean, jac=True, method="L-BFGS-B",
                                      options={"gtol": 1e-12, "ftol": 1e-15}).x  # fmt: skip
        j = coord.entity_ids.get_loc(user)
        np.testing.assert_allclose([coord.coef[j, 0], coord.intercept[j]], ref, atol=1e-6)
    # per_item was not named: frozen.
    np.testing.assert_array_equal(model["per_item"].intercept, old_model["per_item"].intercept)


def test_lineage_records_parent_data_and_metrics(windows) -> None:
    store, _, new, val = windows
    result = refresh(store.root, new, validation=val, timestamp_column="day")
    lineage = store.info(2).lineage
    assert lineage == json.loads(json.dumps(result.lineage, default=str))
    assert lineage["parent"]["version"] == 1
    assert lineage["mode"] == "partial" and lineage["frozen"] == ["global"]
    assert lineage["refreshed"] == ["per_user", "per_item"]
    assert lineage["data"]["train"]["rows"] == len(new)
    assert lineage["data"]["train"]["time_range"] == [int(new["day"].min()), int(new["day"].max())]
    before = GDMixModel.load(store.path(1)).evaluate(val)["auc"]
    after = GDMixModel.load(store.path(2)).evaluate(val)["auc"]
    assert lineage["metrics_before"]["auc"] == pytest.approx(before)
    assert lineage["metrics_after"]["auc"] == pytest.approx(after)
    assert lineage["seconds"] > 0 and lineage["generation"] == 1


def test_guard_refuses_a_worse_model(windows, capsys) -> None:
    store, _, new, val = windows
    flipped = new.assign(label=1 - new["label"])  # a broken data feed
    data = store.root.parent / "flipped.parquet"
    flipped.to_parquet(data, index=False)
    vpath = store.root.parent / "val.parquet"
    val.to_parquet(vpath, index=False)
    argv = ["-q", "refresh", "--model", str(store.root), "--data", str(data),
            "--validation", str(vpath), "--max-regression", "0.05"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 3
    out, err = capsys.readouterr()
    assert "refusing to promote" in err and "version 2" in err
    report = json.loads(out)
    assert report["promoted"] is False and report["guard"] == "refused"
    assert store.current() == 1 and store.numbers() == [1, 2]
    # A healthy window passes the guard.
    new.to_parquet(data, index=False)
    assert main(argv) == 0
    assert store.current() == 3


def test_entities_without_rows_expire(windows, tmp_path) -> None:
    store, old_model, new, _ = windows
    absent = sorted(set(old_model["per_user"].entity_ids) - set(new["user_id"]))
    refresh(store.root, new, expire_after=2)
    first = GDMixModel.load(store.root)["per_user"]
    ages = dict(zip(first.entity_ids, first.entity_age, strict=True))
    assert all(ages[u] == 1 for u in absent) and ages[new["user_id"].iloc[0]] == 0
    result = refresh(store.root, new, expire_after=2)
    second = GDMixModel.load(store.root)["per_user"]
    assert result.lineage["expired_entities"]["per_user"] == len(absent)
    assert not set(absent) & set(second.entity_ids)
    assert set(new["user_id"]) <= set(second.entity_ids)


def test_refresh_command_to_a_folder(windows, tmp_path, capsys) -> None:
    store, _, new, _ = windows
    data = tmp_path / "new.csv"
    new.to_csv(data, index=False)
    out = tmp_path / "next"
    argv = ["-q", "refresh", "--model", str(store.path(1)), "--data", str(data),
            "--output", str(out), "--mode", "warm", "--coordinates", "per_item"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["refreshed"] == ["per_item"] and report["frozen"] == ["global", "per_user"]
    assert GDMixModel.load(out).lineage["parent"]["path"] == str(store.path(1))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: [*a, "--coordinates", "per_nobody"], "no coordinate"),
        (lambda a: [*a, "--coordinates", "global"], "retrains random effects"),
        (lambda a: [*a, "--mode", "incremental", "--coordinates", "per_user"], None),
        (lambda a: [x if x != "NEW" else "EMPTY" for x in a], "empty"),
        (lambda a: [x if x != "NEW" else "NOCOL" for x in a], "missing column"),
        (lambda a: [x if x != "NEW" else "BADKIND" for x in a], "holds string values"),
        (lambda a: [x if x != "STORE" else "MISSING" for x in a], "no such folder"),
        (lambda a: [*a, "--max-regression", "0.01"], "validation data"),
    ],
)
def test_bad_refresh_input_is_one_line(windows, tmp_path, capsys, change, match) -> None:
    store, _, new, _ = windows
    files = {name: tmp_path / f"{name.lower()}.parquet"
             for name in ("NEW", "EMPTY", "NOCOL", "BADKIND")}  # fmt: skip
    new.to_parquet(files["NEW"], index=False)
    new.iloc[:0].to_parquet(files["EMPTY"], index=False)
    new.drop(columns=["x1"]).to_parquet(files["NOCOL"], index=False)
    new.assign(x2=new["x2"].astype(str)).to_parquet(files["BADKIND"], index=False)
    paths = {**{k: str(v) for k, v in files.items()}, "STORE": str(store.root),
             "MISSING": str(tmp_path / "no-store")}  # fmt: skip
    argv = [paths.get(x, x) for x in change(["-q", "refresh", "--model", "STORE", "--data", "NEW"])]
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    if match is None:  # incremental on a model with variances works
        assert status == 0
        return
    assert status == 2 and len(err) == 1 and match in err[0], err
    assert store.numbers() == [1] and store.current() == 1  # nothing published


def test_incremental_needs_variances(toy_job, tmp_path) -> None:
    coords = [dict(c, variance="none") if c["type"] == "random" else c for c in COORDS]
    model = gdmix.fit(_config(coords), toy_job.train)
    path = model.save(tmp_path / "m")
    with pytest.raises(ConfigError, match="variances"):
        refresh(path, toy_job.validation, mode="incremental", output=tmp_path / "n")
    with pytest.raises(ConfigError, match="no destination"):
        refresh(path, toy_job.validation)
    with pytest.raises(ModelDirectoryError):
        refresh(tmp_path / "nope", toy_job.validation, output=tmp_path / "n")
    with pytest.raises(DataError, match="empty"):
        refresh(path, toy_job.validation.iloc[:0], output=tmp_path / "n")
    assert not (tmp_path / "n").exists()
    assert isinstance(Path(path), Path)

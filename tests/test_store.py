"""The model store: numbered versions, an atomic 'current' pointer, promote/rollback/gc."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import gdmix
from conftest import make_toy_frame
from gdmix.cli import main
from gdmix.errors import ModelDirectoryError, OutputError
from gdmix.fsutil import PathLock
from gdmix.model import GDMixModel
from gdmix.store import ModelStore


@pytest.fixture(scope="module")
def models():
    frame, _ = make_toy_frame(seed=3)
    config = gdmix.GDMixConfig.model_validate(
        {
            "coordinates": [
                {"name": "g", "type": "fixed", "features": {"numeric": ["x1", "x2"]}},
                {"name": "u", "type": "random", "entity": "user_id"},
            ],
            "training": {"progress": False},
        }
    )
    parts = np.array_split(np.arange(len(frame)), 3)
    return [gdmix.fit(config, frame.iloc[p]) for p in parts], frame


def _scores(model_or_path, frame) -> np.ndarray:
    model = (
        model_or_path if isinstance(model_or_path, GDMixModel) else GDMixModel.load(model_or_path)
    )
    return model.score(frame)["total"].to_numpy()


def test_publish_promote_rollback_gc(models, tmp_path) -> None:
    fitted, frame = models
    store = ModelStore(tmp_path / "store")
    numbers = [store.publish(m.write_into, promote=True) for m in fitted]
    assert numbers == [1, 2, 3] and store.numbers() == [1, 2, 3]
    assert store.current() == 3
    assert os.readlink(store.root / "current") == os.path.join("versions", "000003")
    # Loading the store loads the current version.
    np.testing.assert_array_equal(_scores(store.root, frame), _scores(fitted[2], frame))

    assert store.rollback() == 2
    np.testing.assert_array_equal(_scores(store.root, frame), _scores(fitted[1], frame))
    assert store.promote("latest") == 3
    assert [p["version"] for p in store.promotions()] == [1, 2, 3, 2, 3]
    assert store.rollback() == 2  # back to what was current before the last promotion
    assert store.promote(1) == 1

    deleted = store.gc(keep=1)
    # Kept: the newest, the current one, and the rollback target.
    assert deleted == [] and store.numbers() == [1, 2, 3]
    store.promote(3)  # promoted before it: 1, the rollback target
    assert store.gc(keep=1) == [2]
    assert store.numbers() == [1, 3]
    assert store.rollback() == 1
    with pytest.raises(ModelDirectoryError, match="no version 2"):
        store.promote(2)
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]


def test_unpromoted_version_stays_out_of_current(models, tmp_path) -> None:
    fitted, _ = models
    store = ModelStore(tmp_path / "store")
    store.publish(fitted[0].write_into, promote=True)
    two = store.publish(fitted[1].write_into)
    assert store.current() == 1 and two == 2
    assert store.info(2).current is False and store.info("current").version == 1


def test_readers_never_see_a_half_switched_store(models, tmp_path) -> None:
    fitted, frame = models
    store = ModelStore(tmp_path / "store")
    for m in fitted[:2]:
        store.publish(m.write_into, promote=True)
    expected = [_scores(m, frame) for m in fitted[:2]]
    stop = threading.Event()
    errors: list[BaseException] = []

    def flip() -> None:
        i = 0
        while not stop.is_set():
            store.promote(1 + i % 2)
            i += 1

    thread = threading.Thread(target=flip)
    thread.start()
    try:
        for _ in range(40):
            try:
                got = _scores(store.root, frame)
            except BaseException as err:  # any failure to read is a defect
                errors.append(err)
                continue
            assert any(np.array_equal(got, e) for e in expected)
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_a_store_locked_by_another_process_is_a_clear_error(models, tmp_path) -> None:
    fitted, _ = models
    store = ModelStore(tmp_path / "store", lock_timeout=0.2)
    store.publish(fitted[0].write_into, promote=True)
    holder = PathLock(store.root / "store")
    holder.acquire()
    try:
        with pytest.raises(OutputError, match=rf"process {os.getpid()}.*gave up"):
            store.promote(1)
    finally:
        holder.release()


def test_concurrent_publishers_get_distinct_numbers(models, tmp_path) -> None:
    fitted, _ = models
    store = ModelStore(tmp_path / "store")
    out: list[int] = []
    threads = [
        threading.Thread(target=lambda m=m: out.append(store.publish(m.write_into))) for m in fitted
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == [1, 2, 3] and store.numbers() == [1, 2, 3]


def test_models_command(models, tmp_path, capsys) -> None:
    fitted, _ = models
    root = tmp_path / "store"
    store = ModelStore(root)
    for m in fitted:
        store.publish(m.write_into, promote=True)
    capsys.readouterr()
    assert main(["models", "list", "--store", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("*") and " 3 " in lines[-1]
    assert main(["models", "rollback", "--store", str(root)]) == 0
    assert capsys.readouterr().out.strip() == "current: version 2"
    assert main(["models", "show", "--store", str(root), "1"]) == 0
    assert '"version": 1' in capsys.readouterr().out
    assert main(["models", "promote", "--store", str(root), "7"]) == 2
    assert "no version 7" in capsys.readouterr().err
    assert main(["models", "gc", "--store", str(root), "--keep", "1"]) == 0
    assert "deleted versions: [1]" in capsys.readouterr().out
    assert main(["models", "list", "--store", str(tmp_path / "nothing")]) == 0  # empty


def test_train_publishes_to_a_store(toy_job, capsys) -> None:
    root = toy_job.root / "store"
    argv = ["-q", "train", "--config", str(toy_job.config_path), "--store", str(root)]
    assert main(argv) == 0
    assert main(argv) == 0
    store = ModelStore(root)
    assert store.numbers() == [1, 2] and store.current() == 2
    assert store.info(2).lineage["mode"] == "train"
    assert store.info(2).lineage["data"]["train"]["rows"] == len(toy_job.train)
    assert isinstance(Path(store.path()), Path)

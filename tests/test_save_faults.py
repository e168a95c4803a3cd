"""The save path under faults, run for real: SIGKILL at every step of a save, a failing
second rename, two concurrent writers, a full disk. After each, the previous (or the
new) model is at the path, complete and loadable, and the next save leaves no debris."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gdmix
from conftest import make_toy_frame
from gdmix import fsutil, model_dir
from gdmix.errors import OutputError
from gdmix.model import GDMixModel

KILL_POINTS = ["tmp_created", "written", "exchanged", "done"]
FALLBACK_KILL_POINTS = ["tmp_created", "written", "old_moved", "replaced", "done"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, Path, pd.DataFrame]:
    """Two different trained models (saved under a scratch folder) and a table to score."""
    root = tmp_path_factory.mktemp("models")
    frame, _ = make_toy_frame(seed=5)
    config = gdmix.GDMixConfig.model_validate(
        {
            "coordinates": [
                {"name": "g", "type": "fixed", "features": {"numeric": ["x1", "x2"]}},
                {"name": "u", "type": "random", "entity": "user_id", "l2": 2.0},
            ],
            "training": {"progress": False},
        }
    )
    a = gdmix.fit(config, frame.iloc[:1500]).save(root / "a")
    b = gdmix.fit(config, frame.iloc[1500:]).save(root / "b")
    return a, b, frame


def _scores(path: Path, frame: pd.DataFrame) -> np.ndarray:
    return GDMixModel.load(path).score(frame)["total"].to_numpy()


def _leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}"))


def _child_save(source: Path, target: Path, point: str, *, exchange: bool) -> int:
    """Save the model at ``source`` to ``target`` in a child process that SIGKILLs itself
    when the save reaches ``point``; returns the child's exit status."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from gdmix import fsutil
        from gdmix.model import GDMixModel
        if not {exchange!r}:
            fsutil._renameat2 = None
        def hook(name):
            if name == {point!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        model = GDMixModel.load({str(source)!r})
        fsutil.set_fault_hook(hook)
        model.save({str(target)!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    return proc.returncode


@pytest.mark.parametrize(
    ("point", "exchange"),
    [(p, True) for p in KILL_POINTS] + [(p, False) for p in FALLBACK_KILL_POINTS],
)
def test_sigkill_at_every_step_keeps_a_model(two_models, tmp_path, point, exchange) -> None:
    old, new, frame = two_models
    target = tmp_path / "model"
    GDMixModel.load(old).save(target)
    expected_old, expected_new = _scores(old, frame), _scores(new, frame)

    status = _child_save(new, target, point, exchange=exchange)
    assert status == -signal.SIGKILL

    # A reader sees a complete model: the old one before the swap, the new one after.
    got = _scores(target, frame)
    swapped = point in ("exchanged", "done", "replaced")
    np.testing.assert_array_equal(got, expected_new if swapped else expected_old)
    if exchange or point not in ("old_moved",):
        assert (target / "manifest.json").is_file()  # never a moment without a model

    # The next save cleans what the killed one left (and puts a moved-away model back).
    GDMixModel.load(new).save(target)
    assert _leftovers(target) == []
    np.testing.assert_array_equal(_scores(target, frame), expected_new)


def test_failing_second_rename_restores_the_old_model(two_models, tmp_path, monkeypatch):
    old, new, frame = two_models
    target = tmp_path / "model"
    GDMixModel.load(old).save(target)
    monkeypatch.setattr(fsutil, "_renameat2", None)  # no atomic exchange: two renames
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new model into place
            raise OSError(errno.EIO, "Input/output error (simulated)", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(model_dir.os, "replace", flaky_replace)
    with pytest.raises(OutputError, match="Input/output error"):
        GDMixModel.load(new).save(target)
    monkeypatch.undo()
    assert calls[0][1].startswith(".model.old-") and calls[1][1] == "model"
    np.testing.assert_array_equal(_scores(target, frame), _scores(old, frame))
    assert _leftovers(target) == []


def test_full_disk_keeps_the_old_model(two_models, tmp_path, monkeypatch) -> None:
    old, new, frame = two_models
    target = tmp_path / "model"
    GDMixModel.load(old).save(target)
    from gdmix.effects import random_table

    def no_space(table, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(random_table.pq, "write_table", no_space)
    with pytest.raises(OutputError, match="No space left on device"):
        GDMixModel.load(new).save(target)
    monkeypatch.undo()
    np.testing.assert_array_equal(_scores(target, frame), _scores(old, frame))
    assert _leftovers(target) == []


def test_full_disk_through_the_command_line(toy_job, capsys, monkeypatch) -> None:
    from gdmix.cli import main
    from gdmix.effects import random_table

    def no_space(table, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(random_table.pq, "write_table", no_space)
    capsys.readouterr()
    assert main(["-q", "train", "--config", str(toy_job.config_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert not toy_job.model_dir.exists()
    assert _leftovers(toy_job.model_dir) == []


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from gdmix import fsutil
    from gdmix.model import GDMixModel
    source, target, go = sys.argv[1], sys.argv[2], sys.argv[3]
    def hook(name):
        if name == "tmp_created" and go != "-":
            print("locked", flush=True)
            while not os.path.exists(go):  # hold the lock until told to go on
                time.sleep(0.02)
    fsutil.set_fault_hook(hook)
    GDMixModel.load(source).save(target)
    print("saved", flush=True)
    """
)


def test_two_concurrent_writers_are_serialised(two_models, tmp_path) -> None:
    old, new, frame = two_models
    target = tmp_path / "model"
    go = tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(old), str(target), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert first.stdout is not None
    assert first.stdout.readline().strip() == "locked"  # the first writer holds the lock
    second = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(new), str(target), "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert second.stderr is not None
    waiting = second.stderr.readline()  # it waits, and says for whom
    go.write_text("go")  # now the first one may finish
    out, err = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err, err2)
    assert "saved" in out and "saved" in out2
    assert f"waiting for process {first.pid}" in waiting
    # The second writer replaced the first one's model once the lock was free.
    np.testing.assert_array_equal(_scores(target, frame), _scores(new, frame))
    assert _leftovers(target) == []


def test_lock_timeout_names_the_other_writer(two_models, tmp_path) -> None:
    old, _new, _frame = two_models
    target = tmp_path / "model"
    holder = fsutil.PathLock(target)
    holder.acquire()
    try:
        start = time.monotonic()
        with pytest.raises(OutputError, match=rf"process {os.getpid()}.*gave up"):
            model_dir.write_model_directory(target, lambda tmp: None, lock_timeout=0.3)
        assert time.monotonic() - start < 5
    finally:
        holder.release()
    assert _leftovers(target) == []
    GDMixModel.load(old).save(target)  # free again
    assert json.loads((target / "manifest.json").read_text())["format"] == "gdmix-model"


def test_a_failing_writer_leaves_nothing_behind(tmp_path) -> None:
    target = tmp_path / "model"

    def broken(tmp: Path) -> None:
        (tmp / "half.txt").write_text("half a model")
        raise OSError(errno.EACCES, "Permission denied (simulated)", str(tmp / "x"))

    with pytest.raises(OutputError, match="Permission denied"):
        model_dir.write_model_directory(target, broken)
    assert not target.exists()
    assert _leftovers(target) == []

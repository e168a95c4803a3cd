"""Data-parallel training of the deep fixed effect (torch.distributed, gloo on the CPU).

The same job is trained in one process (``gdmix.fit``) and in two (the launcher behind
``gdmix train --nproc 2``); the two models must agree, rank 0 must write a loadable
model, and both ranks must end with the same weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from gdmix.cli import main as cli_main  # noqa: E402
from gdmix.config import load_config  # noqa: E402
from gdmix.deep import distributed  # noqa: E402
from gdmix.deep.distributed import launch, state_checksum  # noqa: E402
from gdmix.deep.fixed_torch import _shards  # noqa: E402
from gdmix.model import GDMixModel  # noqa: E402
from gdmix.training import fit  # noqa: E402

N_ROWS = 20_000
N_USERS = 200


def _frame(seed: int = 0) -> pd.DataFrame:
    """Nonlinear global signal (numeric + categorical) plus a per-user bias."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_ROWS, 3))
    level = rng.integers(0, 12, size=N_ROWS)
    user = rng.integers(0, N_USERS, size=N_ROWS)
    level_effect = rng.normal(0.0, 0.8, size=12)
    user_bias = rng.normal(0.0, 0.7, size=N_USERS)
    logit = (
        1.5 * np.sin(2.0 * x[:, 0])
        + x[:, 1] * x[:, 2]
        - 0.5 * x[:, 1]
        + level_effect[level]
        + user_bias[user]
    )
    label = (rng.uniform(size=N_ROWS) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame(x, columns=["x0", "x1", "x2"])
    frame["level"] = [f"l{v}" for v in level]
    frame["user_id"] = user.astype(np.int64)
    frame["uid"] = np.arange(N_ROWS, dtype=np.int64)
    frame["label"] = label
    return frame


def _write_job(root: Path, deep: dict[str, Any] | None = None, **extra: Any) -> Path:
    frame = _frame()
    parts = {"train": frame.iloc[:14_000], "validation": frame.iloc[14_000:17_000]}
    parts["test"] = frame.iloc[17_000:]
    data: dict[str, Any] = {"label": "label", "uid": "uid"}
    for name, part in parts.items():
        path = root / f"{name}.parquet"
        if not path.exists():
            part.reset_index(drop=True).to_parquet(path, index=False)
        data[name] = path.name
    coord = {
        "name": "global",
        "type": "deep",
        "device": "cpu",
        "features": {"numeric": ["x0", "x1", "x2"], "categorical": ["level"]},
        "architecture": {"kind": "mlp", "hidden": [32, 16], "embedding_dim": 4},
        "learning_rate": 0.01,
        "batch_size": 512,
        "max_epochs": 6,
        "patience": 2,
    }
    coord.update(deep or {})
    config = {
        "data": data,
        "coordinates": [
            coord,
            {"name": "per_user", "type": "random", "entity": "user_id", "l2": 1.0},
        ],
        "training": {"n_passes": 2, "progress": False},
        "output": "model",
        **extra,
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The job trained once in one process and once with two (gloo)."""
    root = tmp_path_factory.mktemp("ddp")
    config_path = _write_job(root)
    config = load_config(config_path)
    single = fit(config)
    single_metrics = {
        "validation": single.metrics["validation"],
        "test": single.evaluate(config.data.test),
    }
    start = time.perf_counter()
    report = launch(config_path, root / "ddp_model", 2, ["--quiet"])
    seconds = time.perf_counter() - start
    return {
        "config": config,
        "single": single,
        "single_metrics": single_metrics,
        "report": report,
        "seconds": seconds,
        "model_dir": root / "ddp_model",
    }


def test_ddp_matches_single_process_auc(ddp_runs: dict[str, Any]) -> None:
    single, report = ddp_runs["single_metrics"], ddp_runs["report"]
    print(
        f"single: validation {single['validation']['auc']:.5f} test {single['test']['auc']:.5f}"
        f" | ddp x2: validation {report['validation']['auc']:.5f} "
        f"test {report['test']['auc']:.5f} ({ddp_runs['seconds']:.1f}s)"
    )
    assert single["test"]["auc"] > 0.75  # it learns the nonlinear signal and the users
    assert report["test"]["auc"] > 0.75
    for split in ("validation", "test"):
        assert report[split]["auc"] == pytest.approx(single[split]["auc"], abs=0.002)
    assert report["distributed"]["world_size"] == 2
    assert report["distributed"]["backend"] == "gloo"
    # The deep coordinate really trained data-parallel, with the same number of epochs'
    # worth of work reported.
    model = GDMixModel.load(ddp_runs["model_dir"])
    deep_fits = [h for h in model.history if h["coordinate"] == "global"]
    assert deep_fits and all(h["world_size"] == 2 for h in deep_fits)


def test_rank0_writes_a_loadable_model_that_scores_as_reported(ddp_runs: dict[str, Any]) -> None:
    report, config = ddp_runs["report"], ddp_runs["config"]
    assert report["model"] == str(ddp_runs["model_dir"].resolve())
    folder = ddp_runs["model_dir"] / "coordinates" / "global"
    for name in ("features.json", "deep.json", "state_dict.pt"):
        assert (folder / name).is_file()
    model = GDMixModel.load(ddp_runs["model_dir"])
    assert model.evaluate(config.data.test)["auc"] == pytest.approx(
        report["test"]["auc"], abs=1e-12
    )
    assert model.evaluate(config.data.validation)["auc"] == pytest.approx(
        report["validation"]["auc"], abs=1e-12
    )
    # Nothing temporary left next to the model.
    assert not [p.name for p in ddp_runs["model_dir"].parent.iterdir() if p.name.startswith(".")]


def test_both_ranks_end_with_identical_weights(ddp_runs: dict[str, Any]) -> None:
    sums = ddp_runs["report"]["distributed"]["deep_weights_sha256"]["global"]
    assert len(sums) == 2
    assert sums[0] == sums[1]  # rank 1's own checksum equals rank 0's
    saved = GDMixModel.load(ddp_runs["model_dir"])["global"].get_state()["state_dict"]
    assert state_checksum(saved) == sums[0]
    # ... and they are not the single-process weights bit for bit (the data really was
    # split), although the models agree (test above).
    single = ddp_runs["single"]["global"].get_state()["state_dict"]
    assert state_checksum(single) != sums[0]


def test_shards_cover_each_global_batch_once() -> None:
    perm = torch.randperm(1003, generator=torch.Generator().manual_seed(0))
    for size in (1, 2, 3, 4):
        steps = [list(_shards(perm, 100, rank, size)) for rank in range(size)]
        assert len({len(s) for s in steps}) == 1  # the same number of steps on every rank
        for parts in zip(*steps, strict=True):
            rows = torch.cat([idx for idx, _ in parts])
            assert all(b == len(rows) for _, b in parts)
            assert all(len(idx) >= 1 for idx, _ in parts)
        seen = torch.cat([idx for s in steps for idx, _ in s]).tolist()
        assert sorted(set(seen)) == list(range(1003))
        # The last batch (3 rows) is padded only when there are more ranks than rows.
        assert len(seen) == 1003 + max(0, size - 3)
    # A last batch of fewer rows than ranks is padded from the start of the permutation.
    small = list(_shards(perm[:5], 4, 1, 4))
    assert [b for _, b in small] == [4, 4]
    assert small[1][0].tolist() == [perm[0].item()]


def test_bad_config_key_exits_2_without_spawning(tmp_path: Path, monkeypatch, capsys) -> None:
    config_path = _write_job(tmp_path, deep={"learning_rat": 0.1})

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a worker process was started")

    monkeypatch.setattr(distributed.subprocess, "Popen", refuse)
    assert cli_main(["train", "--config", str(config_path), "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "learning_rat" in err[0] and "unknown key" in err[0]
    # Options that cannot work with several processes are refused the same way.
    good = _write_job(tmp_path)
    for argv in (["--nproc", "0"], ["--nproc", "2", "--engine", "dask"]):
        assert cli_main(["train", "--config", str(good), *argv]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    no_deep = yaml.safe_load(good.read_text())
    no_deep["coordinates"] = no_deep["coordinates"][1:]
    (tmp_path / "no_deep.yaml").write_text(yaml.safe_dump(no_deep))
    assert cli_main(["train", "--config", str(tmp_path / "no_deep.yaml"), "--nproc", "2"]) == 2
    assert "trains none" in capsys.readouterr().err


def test_worker_data_error_is_one_line_and_exit_2(tmp_path: Path, capfd) -> None:
    config_path = _write_job(tmp_path, deep={"features": {"numeric": ["x0", "no_such_column"]}})
    assert cli_main(["-q", "train", "--config", str(config_path), "--nproc", "2"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and "no_such_column" in err[-1], err
    assert not (tmp_path / "model").exists()


FAILING_NET = '''
import os

from torch import nn


class FailsOnRank1(nn.Module):
    """A linear logit; in training on rank 1 its fourth minibatch raises."""

    def __init__(self, schema):
        super().__init__()
        self.linear = nn.Linear(schema.n_numeric, 1)
        self.steps = 0

    def forward(self, batch):
        if self.training and os.environ.get("RANK") == "1":
            self.steps += 1
            if self.steps > 3:
                raise RuntimeError("injected failure on rank 1")
        return self.linear(batch["numeric"])
'''


def test_failure_on_one_rank_stops_the_run(tmp_path: Path, monkeypatch, capfd) -> None:
    (tmp_path / "gdmix_test_ddp_nets.py").write_text(textwrap.dedent(FAILING_NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    module = "gdmix_test_ddp_nets:FailsOnRank1"
    config_path = _write_job(tmp_path, deep={"architecture": {"kind": "custom", "module": module}})
    start = time.perf_counter()
    status = cli_main(["-q", "train", "--config", str(config_path), "--nproc", "2"])
    seconds = time.perf_counter() - start
    err = capfd.readouterr().err
    assert status == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("gdmix train: error: rank 1 failed: RuntimeError")
    assert "injected failure on rank 1" in last
    assert seconds < 60  # rank 0, blocked in an all-reduce, was stopped: no hang
    assert not (tmp_path / "model").exists()


def test_torchrun_entry_point_without_environment_is_a_one_line_error(tmp_path: Path) -> None:
    config_path = _write_job(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    run = subprocess.run(
        [sys.executable, "-m", "gdmix.deep.distributed", "--config", str(config_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "torchrun" in lines[0], run.stderr


def test_launcher_report_is_json_serialisable(ddp_runs: dict[str, Any]) -> None:
    json.dumps(ddp_runs["report"])

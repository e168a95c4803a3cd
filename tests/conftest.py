"""Shared fixtures: a small synthetic mixed-model job with known parameters."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

N_ROWS = 3000
N_USERS = 60
N_ITEMS = 40
TRUE_COEF = {"x1": 0.5, "x2": -0.3}
COLORS = ["red", "green", "blue"]


def make_toy_frame(seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows drawn from logit = 0.5*x1 - 0.3*x2 + user_bias + item_bias (seeded)."""
    rng = np.random.default_rng(seed)
    user_bias = rng.normal(0.0, 1.0, size=N_USERS)
    item_bias = rng.normal(0.0, 1.0, size=N_ITEMS)
    user = rng.integers(0, N_USERS, size=N_ROWS)
    item = rng.integers(0, N_ITEMS, size=N_ROWS)
    x1 = rng.normal(size=N_ROWS)
    x2 = rng.normal(size=N_ROWS)
    color = rng.choice(COLORS, size=N_ROWS)
    logit = TRUE_COEF["x1"] * x1 + TRUE_COEF["x2"] * x2 + user_bias[user] + item_bias[item]
    label = (rng.uniform(size=N_ROWS) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame(
        {
            "uid": np.arange(N_ROWS, dtype=np.int64),
            "user_id": user.astype(np.int64),
            "item_id": item.astype(np.int64),
            "x1": x1,
            "x2": x2,
            "color": color,
            "label": label,
        }
    )
    truth = {"coef": dict(TRUE_COEF), "user_bias": user_bias, "item_bias": item_bias}
    return frame, truth


def toy_config(train: Path, validation: Path, test: Path, output: Path) -> dict[str, Any]:
    """The job's config as a plain dictionary (absolute paths)."""
    return {
        "data": {
            "train": str(train),
            "validation": str(validation),
            "test": str(test),
            "label": "label",
            "uid": "uid",
        },
        "coordinates": [
            {
                "name": "global",
                "type": "fixed",
                "l2": 1.0,
                "features": {"numeric": ["x1", "x2"], "categorical": ["color"]},
            },
            {
                "name": "per_user",
                "type": "random",
                "entity": "user_id",
                "l2": 1.0,
                "features": {"numeric": ["x1"]},
            },
            {"name": "per_item", "type": "random", "entity": "item_id", "l2": 1.0},
        ],
        "training": {"n_passes": 2, "progress": False},
        "output": str(output),
    }


@dataclass
class ToyJob:
    """Paths and frames of the synthetic job written under ``root``."""

    root: Path
    config_path: Path
    train_path: Path
    validation_path: Path
    test_path: Path
    model_dir: Path
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    config: dict[str, Any]
    truth: dict[str, Any] = field(default_factory=dict)

    def config_copy(self) -> dict[str, Any]:
        """A deep copy of the config dictionary, to edit for a variant job."""
        return copy.deepcopy(self.config)

    def write_config(self, config: dict[str, Any], name: str = "variant.yaml") -> Path:
        """Write ``config`` as YAML next to the data and return its path."""
        path = self.root / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def write_table(self, frame: pd.DataFrame, name: str) -> Path:
        """Write ``frame`` as Parquet next to the data and return its path."""
        path = self.root / name
        frame.to_parquet(path, engine="pyarrow", index=False)
        return path


@pytest.fixture
def toy_job(tmp_path: Path) -> ToyJob:
    """A synthetic job: 3000 rows (70/10/20 train/validation/test), config, model dir."""
    frame, truth = make_toy_frame(seed=0)
    n_train, n_val = int(0.7 * N_ROWS), int(0.1 * N_ROWS)
    train = frame.iloc[:n_train].reset_index(drop=True)
    validation = frame.iloc[n_train : n_train + n_val].reset_index(drop=True)
    test = frame.iloc[n_train + n_val :].reset_index(drop=True)
    paths = {}
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        paths[name] = tmp_path / f"{name}.parquet"
        part.to_parquet(paths[name], engine="pyarrow", index=False)
    model_dir = tmp_path / "model"
    config = toy_config(paths["train"], paths["validation"], paths["test"], model_dir)
    config_path = tmp_path / "job.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return ToyJob(
        root=tmp_path,
        config_path=config_path,
        train_path=paths["train"],
        validation_path=paths["validation"],
        test_path=paths["test"],
        model_dir=model_dir,
        train=train,
        validation=validation,
        test=test,
        config=config,
        truth=truth,
    )


@pytest.fixture
def trained_toy_model(toy_job: ToyJob) -> Path:
    """Train the toy job in-process (through the CLI) and return its model directory."""
    from gdmix.cli import main

    assert main(["-q", "train", "--config", str(toy_job.config_path)]) == 0
    assert (toy_job.model_dir / "manifest.json").is_file()
    return toy_job.model_dir


@pytest.fixture(scope="session")
def dask_client():
    """One 2-worker Dask LocalCluster for every test that needs one (workers start, and
    load the compiled kernels, once per session)."""
    pytest.importorskip("distributed")
    from gdmix.engines.dask_engine import connect

    client = connect(None, n_workers=2, threads_per_worker=1)
    yield client
    cluster = client.cluster
    client.close()
    cluster.close()

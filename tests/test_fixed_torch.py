"""The deep (PyTorch) fixed effect: references, identities, determinism, persistence, errors.

CPU by default; ``GDMIX_TEST_DEVICE=cuda`` runs the training tests on a GPU (the exact
determinism test is then skipped: CUDA's embedding gradients are accumulated atomically).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from sklearn.linear_model import LogisticRegression  # noqa: E402

from gdmix.cli import main as cli_main  # noqa: E402
from gdmix.config import parse_config  # noqa: E402
from gdmix.config_deep import DeepFixedEffectConfig  # noqa: E402
from gdmix.deep.fixed_torch import TorchFixedEffect  # noqa: E402
from gdmix.deep.text import hash_bucket  # noqa: E402
from gdmix.effects.base import Validation  # noqa: E402
from gdmix.errors import ConfigError, DataError, ModelDirectoryError  # noqa: E402
from gdmix.metrics import roc_auc  # noqa: E402
from gdmix.model import GDMixModel  # noqa: E402
from gdmix.training import fit  # noqa: E402

CUSTOM_MODULE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """Linear in the numeric inputs plus a bias per level of the first categorical."""

    def __init__(self, schema, scale=1.0):
        super().__init__()
        self.linear = nn.Linear(schema.n_numeric, 1)
        self.levels = nn.Embedding(schema.cardinalities[0], 1)
        self.scale = scale

    def forward(self, batch):
        out = self.linear(batch["numeric"]) + self.levels(batch["categorical"][:, 0])
        return self.scale * out  # (n, 1): squeezed by the coordinate


class WrongShape(nn.Module):
    def __init__(self, schema):
        super().__init__()
        self.linear = nn.Linear(schema.n_numeric, 2)

    def forward(self, batch):
        return self.linear(batch["numeric"])


class NotAModule:
    def __init__(self, schema):
        pass
'''


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny importable module of custom networks; returns its name."""
    (tmp_path / "gdmix_test_custom_nets.py").write_text(textwrap.dedent(CUSTOM_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "gdmix_test_custom_nets"


DEVICE = os.environ.get("GDMIX_TEST_DEVICE", "cpu")


def _deep(**settings: Any) -> TorchFixedEffect:
    settings.setdefault("device", DEVICE)
    return TorchFixedEffect(DeepFixedEffectConfig(name="global", **settings))


def _simulated(n: int, seed: int, offset_scale: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    o = offset_scale * rng.normal(size=n)
    g = 1.5 * np.sin(2.0 * x[:, 0]) + x[:, 1] if offset_scale else x @ [1.0, -0.5, 0.25, 0.0]
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-(o + g)))).astype(float)
    frame = pd.DataFrame(x, columns=["x0", "x1", "x2", "x3"])
    frame["label"], frame["offset"], frame["g"] = y, o, g
    return frame, y


def _fit_frame(coord: TorchFixedEffect, train: pd.DataFrame, val: pd.DataFrame | None = None):
    coord.build(train)
    design = coord.design(train, "training data", training=True)
    y = train["label"].to_numpy(float)
    validation = None
    if val is not None:
        yv = val["label"].to_numpy(float)
        vd = coord.design(val, "validation data")
        validation = Validation(vd, yv, np.ones(len(yv)), val["offset"].to_numpy(float))
    diag = coord.fit(
        design, y, np.ones(len(y)), train["offset"].to_numpy(float), validation=validation
    )
    return design, validation, diag


NUMERIC = ["x0", "x1", "x2", "x3"]


@pytest.mark.parametrize("hidden", [[], [16]])
def test_reaches_sklearn_logistic_regression_auc(hidden: list[int]) -> None:
    frame, _ = _simulated(6000, seed=1)
    train, val, test = frame.iloc[:4000], frame.iloc[4000:5000], frame.iloc[5000:]
    coord = _deep(
        features={"numeric": NUMERIC},
        architecture={"kind": "mlp", "hidden": hidden},
        learning_rate=0.01,
        batch_size=256,
        max_epochs=15,
        patience=3,
    )
    _fit_frame(coord, train, val)
    ours = roc_auc(test["label"], coord.score(coord.design(test, "test")))
    ref = LogisticRegression(C=1e6).fit(train[NUMERIC], train["label"])
    theirs = roc_auc(test["label"], ref.decision_function(test[NUMERIC]))
    assert ours == pytest.approx(theirs, abs=0.01)


def test_offset_identity_learns_the_remaining_function() -> None:
    frame, _ = _simulated(6000, seed=2, offset_scale=2.0)
    train, val = frame.iloc[:5000], frame.iloc[5000:]
    coord = _deep(
        features={"numeric": NUMERIC},
        architecture={"kind": "mlp", "hidden": [32, 32]},
        learning_rate=0.01,
        batch_size=128,
        max_epochs=20,
        patience=4,
    )
    design, _, _ = _fit_frame(coord, train, val)
    learned = coord.score(design)
    assert np.corrcoef(learned, train["g"])[0, 1] > 0.95
    # Without the offset the network would have to explain o too; with it, it does not.
    assert abs(np.corrcoef(learned, train["offset"])[0, 1]) < 0.1


@pytest.mark.skipif(DEVICE != "cpu", reason="bitwise determinism is promised on the CPU only")
def test_two_fits_with_the_same_seed_are_identical() -> None:
    frame, _ = _simulated(1500, seed=3)
    states = []
    for _ in range(2):
        coord = _deep(
            features={"numeric": NUMERIC},
            architecture={"kind": "mlp", "hidden": [8], "dropout": 0.2},
            max_epochs=3,
            seed=7,
        )
        _fit_frame(coord, frame.iloc[:1000], frame.iloc[1000:])
        states.append(coord.get_state()["state_dict"])
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    other = _deep(features={"numeric": NUMERIC}, architecture={"kind": "mlp"}, seed=8)
    other.build(frame)
    assert not torch.equal(
        other.get_state()["state_dict"]["body.0.weight"], states[0]["body.0.weight"]
    )


def test_early_stopping_restores_the_best_epoch_and_warm_starts() -> None:
    frame, _ = _simulated(1200, seed=4)
    train, val = frame.iloc[:400], frame.iloc[400:]
    coord = _deep(
        features={"numeric": NUMERIC},
        architecture={"kind": "mlp", "hidden": [64, 64]},
        learning_rate=0.05,
        batch_size=32,
        max_epochs=30,
        patience=3,
    )
    _, validation, diag = _fit_frame(coord, train, val)
    aucs = [h["validation_auc"] for h in coord.epoch_history]
    assert diag["epochs"] == len(aucs) - 1
    assert diag["epochs"] < 30  # overfitting a small table stops early
    final = roc_auc(validation.y, validation.offset + coord.score(validation.design))
    assert final == pytest.approx(max(aucs), abs=1e-12)
    assert diag["best_epoch"] == int(np.argmax(aucs))
    # A second fit starts from these weights: its epoch 0 is the model just returned.
    design = coord.design(train, "training data")
    y = train["label"].to_numpy(float)
    coord.fit(design, y, np.ones(len(y)), np.zeros(len(y)), validation=validation)
    assert coord.epoch_history[0]["validation_auc"] == pytest.approx(final, abs=1e-12)


def test_get_state_and_set_state() -> None:
    frame, _ = _simulated(800, seed=5)
    coord = _deep(features={"numeric": NUMERIC}, max_epochs=2)
    design, _, _ = _fit_frame(coord, frame)
    before, state = coord.score(design), coord.get_state()
    y = frame["label"].to_numpy(float)
    coord.fit(design, y, np.ones(len(y)), np.zeros(len(y)), l2=0.1)
    assert not np.allclose(coord.score(design), before)
    coord.set_state(state)
    np.testing.assert_array_equal(coord.score(design), before)
    assert coord.params == {"l2": 0.0}


def _toy_with_text_and_bags(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    words = np.array(["good", "great", "bad", "awful", "plain"])
    rng = np.random.default_rng(0)
    picks = rng.integers(0, 5, size=(len(frame), 2))
    frame["title"] = [f"{words[a]} Movie ({b})" for a, b in picks]
    frame["terms"] = [
        [{"name": "w", "term": str(words[a]), "value": 1.0}] if a < 3 else [] for a, _ in picks
    ]
    return frame


ARCHITECTURES = {
    "mlp": {"kind": "mlp", "hidden": [16], "dropout": 0.1},
    "wide_deep": {"kind": "wide_deep", "hidden": [16]},
    "text_cnn": {"kind": "text_cnn", "embedding_dim": 8, "filters": 6, "width": 3},
    "dlrm": {"kind": "dlrm", "bottom": [8], "top": [8], "embedding_dim": 4, "wide": True},
    "custom": {"kind": "custom", "module": "gdmix_test_custom_nets:TinyNet", "kwargs": {}},
}


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_architecture_end_to_end_through_gdmix_fit(
    kind: str, toy_job, custom_module: str, tmp_path: Path
) -> None:
    train, val, test = (
        _toy_with_text_and_bags(t) for t in (toy_job.train, toy_job.validation, toy_job.test)
    )
    fe = {
        "name": "global",
        "type": "deep",
        "device": DEVICE,
        "architecture": ARCHITECTURES[kind],
        "features": {
            "numeric": ["x1", "x2"],
            "categorical": ["color", "item_id"],
            "bags": ["terms"],
        },
        "hash_buckets": {"item_id": 16},
        "text": {"column": "title", "max_length": 4},
        "max_epochs": 4,
        "learning_rate": 0.01,
        "batch_size": 128,
    }
    config = parse_config(
        {
            "data": {"label": "label", "uid": "uid"},
            "coordinates": [
                fe,
                {"name": "per_user", "type": "random", "entity": "user_id", "l2": 1.0},
            ],
            "training": {"n_passes": 2, "progress": False},
        }
    )
    model = fit(config, train, val)
    metrics = model.evaluate(test)
    assert metrics["auc_after@global"] > 0.55
    assert metrics["auc"] > 0.62  # the per-user random effect adds the user biases
    scores = model.score(test)
    assert list(scores.columns) == ["uid", "global", "per_user", "total"]
    path = model.save(tmp_path / "model")
    assert (path / "coordinates" / "global" / "state_dict.pt").is_file()
    if kind == "custom":  # a manifest's code is imported only when trusted
        with pytest.raises(ModelDirectoryError, match="trust_custom_code"):
            GDMixModel.load(path)
    again = GDMixModel.load(path, trust_custom_code=kind == "custom")
    pd.testing.assert_frame_equal(again.score(test), scores)


def test_hashed_categorical_codes_and_unseen_values() -> None:
    frame = pd.DataFrame({"ad": ["a1", "a2", "a1"], "x": [0.0, 1.0, 2.0], "label": [0, 1, 1]})
    coord = _deep(features={"numeric": ["x"], "categorical": ["ad"]}, hash_buckets={"ad": 100})
    coord.build(frame)
    assert coord.schema.categorical == {"ad": 101}
    test = pd.DataFrame({"ad": ["a1", "never seen", None], "x": [0.0, 0.0, 0.0]})
    codes = coord.design(test, "test")
    expected = [1 + hash_bucket("a1", 100), 1 + hash_bucket("never seen", 100), 0]
    assert codes.tensors["categorical"][:, 0].tolist() == expected
    plain = _deep(features={"numeric": ["x"], "categorical": ["ad"]})
    plain.build(frame)
    assert plain.design(test, "test").tensors["categorical"][:, 0].tolist() == [1, 0, 0]


def test_gdmix_imports_without_torch() -> None:
    code = (
        "import sys, gdmix, gdmix.config, gdmix.training, gdmix.model, gdmix.config_deep, "
        "gdmix.deep.text; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- bad input -------------------------------------------------------------------


def _small_job(**fe: Any) -> tuple[Any, pd.DataFrame]:
    frame, _ = _simulated(300, seed=6)
    frame["title"] = "a title"
    coord = {"name": "global", "type": "deep", "device": DEVICE, "max_epochs": 1}
    coord.update({"features": {"numeric": NUMERIC}, **fe})
    return parse_config({"coordinates": [coord], "training": {"progress": False}}), frame


def test_missing_text_column_is_a_data_error() -> None:
    config, frame = _small_job(text={"column": "plot"})
    with pytest.raises(DataError, match=r"missing column\(s\) \['plot'\]"):
        fit(config, frame)


def test_text_column_of_numbers_is_a_data_error() -> None:
    config, frame = _small_job(text={"column": "x0"})
    with pytest.raises(DataError, match=r"text column 'x0' must hold strings"):
        fit(config, frame)


def test_text_cnn_without_text_is_a_config_error() -> None:
    config, frame = _small_job(architecture={"kind": "text_cnn"})
    with pytest.raises(ConfigError, match=r"'text_cnn' needs a text column"):
        fit(config, frame)


def test_hash_buckets_of_a_non_categorical_column_is_a_config_error() -> None:
    config, frame = _small_job(hash_buckets={"x0": 10})
    with pytest.raises(ConfigError, match=r"'hash_buckets' names column\(s\) \['x0'\]"):
        fit(config, frame)
    config, frame = _small_job(hash_buckets={"c": 0}, features={"categorical": ["c"]})
    with pytest.raises(ConfigError, match=r"'hash_buckets.c' must be >= 1. Got 0"):
        fit(config, frame)


def test_custom_module_errors(custom_module: str) -> None:
    cases = {
        "no_such_pkg.nets:Net": r"cannot import module 'no_such_pkg.nets'",
        f"{custom_module}:Missing": r"has no attribute 'Missing'",
        f"{custom_module}:NotAModule": r"is not a torch.nn.Module subclass",
    }
    for path, message in cases.items():
        config, frame = _small_job(architecture={"kind": "custom", "module": path})
        with pytest.raises(ConfigError, match=message):
            fit(config, frame)
    config, frame = _small_job(
        architecture={"kind": "custom", "module": f"{custom_module}:WrongShape"}
    )
    with pytest.raises(ConfigError, match=r"one float logit per row.*shape \(2, 2\)"):
        fit(config, frame)
    config, frame = _small_job(
        architecture={
            "kind": "custom",
            "module": f"{custom_module}:TinyNet",
            "kwargs": {"depth": 3},
        }
    )
    with pytest.raises(ConfigError, match=r"'architecture.kwargs'.*depth"):
        fit(config, frame)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'device' is 'cuda'"):
        _deep(features={"numeric": ["x"]}, device="cuda")


def test_bad_input_through_the_cli_is_one_line(toy_job, capsys) -> None:
    config = toy_job.config_copy()
    config["coordinates"][0] = {
        "name": "global",
        "type": "deep",
        "features": {"numeric": ["x1"]},
        "text": {"column": "color"},
        "architecture": {"kind": "custom", "module": "no_such_pkg:Net"},
    }
    path = toy_job.write_config(config, "bad_deep.yaml")
    assert cli_main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cannot import module 'no_such_pkg'" in err[0]


def test_text_max_length_follows_the_data_and_is_saved(tmp_path: Path, caplog) -> None:
    config, frame = _small_job(text={"column": "title"}, architecture={"kind": "mlp"})
    # 300 titles: 285 of 3 words, 15 of 9 words -> 95% fit in 3 tokens.
    frame["title"] = ["one two three"] * 285 + ["a b c d e f g h i"] * 15
    with caplog.at_level("WARNING", logger="gdmix"):
        model = fit(config, frame)
    assert model["global"].encoder.tokenizer.max_length == 3
    assert model["global"].schema.max_length == 3
    assert "5.0% of rows (15 of 300) have more than max_length=3 tokens" in caplog.text
    again = GDMixModel.load(model.save(tmp_path / "model"))
    assert again["global"].encoder.tokenizer.max_length == 3
    pd.testing.assert_frame_equal(again.score(frame), model.score(frame))

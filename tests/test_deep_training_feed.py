"""The deep fixed effect's training loop against plain PyTorch: feed, offsets, speed switches.

The references are hand-written PyTorch loops on the same tensors. CPU only where exact
equality is asserted (``GDMIX_TEST_DEVICE=cuda`` skips those).
"""

from __future__ import annotations

import copy
import gc
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from pydantic import ValidationError  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from gdmix.config_deep import DeepFixedEffectConfig  # noqa: E402
from gdmix.deep.fixed_torch import TorchFixedEffect  # noqa: E402
from gdmix.errors import ConfigError  # noqa: E402
from gdmix.metrics import roc_auc  # noqa: E402

DEVICE = os.environ.get("GDMIX_TEST_DEVICE", "cpu")
cpu_only = pytest.mark.skipif(DEVICE != "cpu", reason="exact equality is promised on the CPU")


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["x0", "x1", "x2"])
    frame["c"] = rng.integers(0, 20, size=n)
    effect = rng.normal(size=20)[frame["c"]]
    logit = frame["x0"] - 0.5 * frame["x1"] + effect
    frame["label"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(float)
    frame["offset"] = 0.3 * rng.normal(size=n)
    return frame


def _coord(**settings: Any) -> TorchFixedEffect:
    base: dict[str, Any] = {
        "name": "global",
        "features": {"numeric": ["x0", "x1", "x2"], "categorical": ["c"]},
        "architecture": {"kind": "dlrm", "bottom": [8], "top": [8], "embedding_dim": 4},
        "batch_size": 64,
        "max_epochs": 2,
        "learning_rate": 0.01,
        "device": DEVICE,
    }
    base.update(settings)
    return TorchFixedEffect(DeepFixedEffectConfig(**base))


def _weights(coord: TorchFixedEffect) -> dict[str, Any]:
    return coord.get_state()["state_dict"]


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _reference_loop(
    net: Any, coord: TorchFixedEffect, frame: pd.DataFrame, rate_at: Any, fit_index: int = 0
) -> None:
    """Plain PyTorch: the coordinate's documented shuffling seed, Adam, mean weighted BCE
    of ``offset + f(x)``; ``rate_at(step)`` gives each step's learning rate."""
    cfg = coord.config
    data = coord.design(frame, "reference").tensors
    y = torch.tensor(frame["label"].to_numpy(np.float32))
    o = torch.tensor(frame["offset"].to_numpy(np.float32))
    w = torch.ones(len(y))
    opt = torch.optim.Adam(net.parameters(), lr=rate_at(0), weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + fit_index)
    step = 0
    net.train()
    for _ in range(cfg.max_epochs):
        perm = torch.randperm(len(y), generator=gen)
        for s in range(0, len(y), cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            for group in opt.param_groups:
                group["lr"] = rate_at(step)
            z = net({k: t[idx] for k, t in data.items()}) + o[idx]
            loss = F.binary_cross_entropy_with_logits(z, y[idx], weight=w[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1


def _fit(coord: TorchFixedEffect, frame: pd.DataFrame, design: Any = None) -> dict[str, Any]:
    if coord.network is None:
        coord.build(frame)
    design = design if design is not None else coord.design(frame, "training data")
    y = frame["label"].to_numpy(float)
    return coord.fit(design, y, np.ones(len(y)), frame["offset"].to_numpy(float), l2=0.0)


@cpu_only
@pytest.mark.parametrize(
    ("settings", "rate"),
    [
        ({}, lambda step: 0.01),
        # sqrt rule: 0.01 * sqrt(64 / 16) = 0.02, reached linearly over 5 warm-up steps
        (
            {"lr_scaling": "sqrt", "lr_reference_batch": 16, "warmup_steps": 5},
            lambda step: 0.02 * min(step + 1, 5) / 5,
        ),
    ],
)
def test_training_equals_a_plain_pytorch_loop(settings: dict[str, Any], rate: Any) -> None:
    frame = _table(700, seed=0)  # 11 batches per epoch, the last one short
    coord = _coord(**settings)
    coord.build(frame)
    net = copy.deepcopy(coord.network)
    _fit(coord, frame)
    _reference_loop(net, coord, frame, rate)
    _assert_same(_weights(coord), {k: v.cpu() for k, v in net.state_dict().items()})


def test_learning_rate_rules_and_their_checks() -> None:
    cfg = DeepFixedEffectConfig(name="g", batch_size=8192, learning_rate=1e-3)
    assert cfg.effective_learning_rate() == 1e-3
    sqrt = cfg.model_copy(update={"lr_scaling": "sqrt", "lr_reference_batch": 128})
    assert sqrt.effective_learning_rate() == pytest.approx(1e-3 * 8.0)
    linear = cfg.model_copy(update={"lr_scaling": "linear", "lr_reference_batch": 128})
    assert linear.effective_learning_rate() == pytest.approx(1e-3 * 64.0)
    with pytest.raises(ValidationError, match="'lr_scaling' 'sqrt' needs 'lr_reference_batch'"):
        DeepFixedEffectConfig(name="g", lr_scaling="sqrt")
    with pytest.raises(ValidationError, match="precision"):
        DeepFixedEffectConfig(name="g", precision="fp16")
    with pytest.raises(ValidationError, match="extra"):
        DeepFixedEffectConfig(name="g", use_fp8=True)


@cpu_only
@pytest.mark.parametrize("chunk_rows", [192, 200, 10_000])
def test_streamed_chunks_give_the_resident_weights(chunk_rows: int) -> None:
    # Chunks are rounded down to whole batches (200 -> 192 rows), so the batches are the
    # resident mode's; 10,000 rows is one chunk for the whole table.
    frame = _table(700, seed=1)
    resident = _coord()
    _fit(resident, frame)
    streamed = _coord(data_placement="stream", stream_chunk_rows=chunk_rows)
    diag = _fit(streamed, frame)
    assert diag["data_placement"] == "stream"
    _assert_same(_weights(streamed), _weights(resident))


def test_later_fits_reuse_the_features_and_take_new_offsets() -> None:
    frame = _table(500, seed=2)
    coord = _coord()
    coord.build(frame)
    design = coord.design(frame, "training data")
    _fit(coord, frame, design)
    assert coord._feed is not None
    feed = coord._feed[1]
    pointers = {k: t.data_ptr() for k, t in feed.features.tensors.items()}
    moved = frame.assign(offset=frame["offset"] + 1.0)
    _fit(coord, moved, design)
    assert coord._feed[1] is feed
    assert {k: t.data_ptr() for k, t in feed.features.tensors.items()} == pointers
    np.testing.assert_allclose(
        feed.targets[2].cpu().numpy(), moved["offset"].to_numpy(np.float32), rtol=0, atol=0
    )
    # A new training table gets a new feed; the feed goes when its table goes.
    other = coord.design(frame, "training data")
    _fit(coord, frame, other)
    assert coord._feed[1] is not feed
    del other
    gc.collect()
    assert coord._feed is None


@cpu_only
def test_second_fit_equals_a_plain_loop_on_the_new_offsets() -> None:
    # Coordinate descent's second pass: warm start from the first fit's weights, the
    # features cached, only the offsets new. The reference redoes it by hand.
    frame = _table(600, seed=3)
    coord = _coord()
    coord.build(frame)
    design = coord.design(frame, "training data")
    _fit(coord, frame, design)
    net = copy.deepcopy(coord.network)
    moved = frame.assign(offset=-frame["offset"])
    _fit(coord, moved, design)
    _reference_loop(net, coord, moved, lambda step: 0.01, fit_index=1)
    _assert_same(_weights(coord), {k: v.cpu() for k, v in net.state_dict().items()})


@cpu_only
def test_two_trainings_are_identical_on_the_cpu() -> None:
    frame = _table(800, seed=4)
    states = []
    for _ in range(2):
        coord = _coord(architecture={"kind": "mlp", "hidden": [8], "dropout": 0.3})
        _fit(coord, frame)
        _fit(coord, frame.assign(offset=0.0))
        states.append(_weights(coord))
    _assert_same(states[0], states[1])


def test_bf16_autocast_trains_to_the_float32_auc() -> None:
    frame = _table(3000, seed=5)
    train, test = frame.iloc[:2400], frame.iloc[2400:]
    aucs = {}
    for precision in ("fp32", "bf16"):
        coord = _coord(precision=precision, max_epochs=4)
        diag = _fit(coord, train)
        assert diag["precision"] == precision
        scores = coord.score(coord.design(test, "test")) + test["offset"].to_numpy()
        aucs[precision] = roc_auc(test["label"], scores)
    assert aucs["fp32"] > 0.7
    assert aucs["bf16"] == pytest.approx(aucs["fp32"], abs=0.01)


def test_auto_switches_stay_off_on_the_cpu() -> None:
    coord = _coord(device="cpu", batch_size=8192)
    frame = _table(300, seed=6)
    diag = _fit(coord, frame)
    assert diag["precision"] == "fp32"
    assert diag["data_placement"] == "resident"
    coord.build(frame)
    opt = coord._optimizer(0.0)
    assert not opt.defaults.get("fused")


def test_fused_optimizer_on_matches_the_unfused_one() -> None:
    frame = _table(400, seed=7)
    plain = _coord(device="cpu", fused_optimizer="off")
    _fit(plain, frame)
    fused = _coord(device="cpu", fused_optimizer="on")
    try:
        _fit(fused, frame)
    except ConfigError as err:  # a torch without the CPU fused kernel says so clearly
        assert "'fused_optimizer: on' is not supported" in str(err)
        return
    a, b = _weights(plain), _weights(fused)
    for key in a:  # same algorithm, other rounding
        torch.testing.assert_close(a[key], b[key], rtol=0.05, atol=0.02)


def test_streamed_training_reaches_the_resident_auc() -> None:
    # On any device (on a GPU the streamed permutation is drawn on the host, the resident
    # one on the device, so the batches differ and only the quality can be compared).
    frame = _table(3000, seed=8)
    train, test = frame.iloc[:2400], frame.iloc[2400:]
    aucs = {}
    for placement in ("device", "stream"):
        coord = _coord(data_placement=placement, stream_chunk_rows=500, max_epochs=4)
        diag = _fit(coord, train)
        assert diag["data_placement"] == ("resident" if placement == "device" else "stream")
        scores = coord.score(coord.design(test, "test")) + test["offset"].to_numpy()
        aucs[placement] = roc_auc(test["label"], scores)
    assert aucs["device"] > 0.7
    assert aucs["stream"] == pytest.approx(aucs["device"], abs=0.01)

"""Deep fixed effect: ``f(x)`` is a PyTorch module trained with Adam/AdamW.

The coordinate minimises the weighted mean of ``BCEWithLogits(offset + f(x), y)`` over
shuffled minibatches, with the optimiser's weight decay as ``l2``. With validation data
it evaluates the validation AUC (of ``offset + f(x)``) before training and after every
epoch, stops after ``patience`` epochs without improvement, and restores the best
epoch's weights. Each fit warm-starts from the current weights, so in later passes of
coordinate descent the network refines itself against the random effects' scores.

Model folder: ``features.json`` (index map), ``deep.json`` (encoder: categorical
order, hash buckets, numeric standardisation, text vocabulary; input schema;
architecture) and ``state_dict.pt`` (``torch.save`` of the CPU state dict).

Data parallelism: when ``torch.distributed`` is initialised with more than one process
(see :mod:`gdmix.deep.distributed`), :meth:`TorchFixedEffect.fit` wraps the network in
``DistributedDataParallel``. Every rank draws the same permutation; each global
minibatch of ``batch_size`` rows is split between the ranks, and each rank's loss is
scaled so that the averaged gradient is the gradient of the global minibatch's mean
loss, as in a single process. Validation and early stopping use the whole validation
table on every rank, with rank 0's AUC as the one every rank acts on, so all ranks
take the same decisions and end with the same weights.

Speed (see ``docs/deep.md``): the training rows are held by a
:class:`~gdmix.deep.feed.TrainingFeed`, made once per training table and kept between
fits (only the offsets are copied again), resident on the device or streamed in pinned
chunks; batches are drawn by a permutation on the device. ``fused_optimizer``,
``precision`` (bf16 autocast), ``compile`` and the large-batch learning-rate rule
(``lr_scaling``) are config switches.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from gdmix.config_deep import DeepFixedEffectConfig
from gdmix.deep.batches import DeepDesign, DeepEncoder, InputSchema
from gdmix.deep.feed import TrainingFeed, fits_on_device
from gdmix.deep.networks import build_network, load_custom_class
from gdmix.effects.base import Coordinate, Validation
from gdmix.errors import ConfigError, DataError
from gdmix.metrics import roc_auc

__all__ = ["TorchFixedEffect", "resolve_device", "set_process_group"]

_FORMAT = 1
_SCORE_BATCH = 8192
#: ``precision: auto`` uses bf16 on a GPU from this batch size on.
_BF16_MIN_BATCH = 4096

# Process group of data-parallel training; None is torch.distributed's default group.
_PROCESS_GROUP: Any = None


def set_process_group(group: Any) -> None:
    """Use ``group`` for data-parallel training of deep coordinates (``None``: the default
    group of ``torch.distributed``)."""
    global _PROCESS_GROUP
    _PROCESS_GROUP = group


def _world() -> tuple[Any, int, int] | None:
    """``(group, rank, world size)`` when torch.distributed runs several processes."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = _PROCESS_GROUP
    size = dist.get_world_size(group)
    return (group, dist.get_rank(group), size) if size > 1 else None


def _rank0(group: Any) -> int:
    """Global rank of ``group``'s rank 0."""
    return 0 if group is None else dist.get_global_rank(group, 0)


def _shards(
    perm: torch.Tensor, global_batch: int, rank: int, size: int
) -> Iterator[tuple[torch.Tensor, int]]:
    """Rank ``rank``'s rows of each global minibatch of ``perm``, and that batch's size.

    Every rank gets the same number of steps. A global batch of ``b`` rows is cut into
    ``size`` contiguous parts of ``b // size`` or ``b // size + 1`` rows; a last batch of
    fewer than ``size`` rows is padded with rows from the start of the permutation so that
    no rank gets an empty batch.
    """
    n = len(perm)
    for start in range(0, n, global_batch):
        chunk = perm[start : start + global_batch]
        b = len(chunk)
        if b < size:
            extra = torch.arange(size - b, device=perm.device) % n
            chunk, b = torch.cat([chunk, perm[extra]]), size
        yield chunk[rank * b // size : (rank + 1) * b // size], b


def resolve_device(device: str) -> torch.device:
    """``torch.device`` of a ``device`` setting (``auto`` picks CUDA when present)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("'device' is 'cuda' but torch finds no CUDA device; use 'auto' or 'cpu'")
    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device)


def _check_config(config: DeepFixedEffectConfig) -> None:
    where = f"coordinate '{config.name}'"
    cats = config.features.categorical
    unknown = sorted(set(config.hash_buckets) - set(cats))
    if unknown:
        raise ConfigError(
            f"{where}: 'hash_buckets' names column(s) {unknown} that are not in "
            f"'features.categorical' ({cats})"
        )
    for col, buckets in config.hash_buckets.items():
        if buckets < 1:
            raise ConfigError(f"{where}: 'hash_buckets.{col}' must be >= 1. Got {buckets} instead")
    if not config.features.columns() and config.text is None:
        raise ConfigError(f"{where}: a deep fixed effect needs 'features' or 'text'")
    if config.architecture.kind == "custom":
        load_custom_class(config.architecture.module)


class TorchFixedEffect(Coordinate):
    """Global fixed effect whose ``f(x)`` is a PyTorch module.

    Parameters
    ----------
    config : DeepFixedEffectConfig
        Inputs (``features``, ``text``, ``hash_buckets``), ``architecture`` and training
        settings. ``intercept`` is ignored: every built-in network has a bias.

    Attributes
    ----------
    encoder : DeepEncoder or None
        Turns tables into tensors; built from the training table by :meth:`build`.
    network : torch.nn.Module or None
        The module ``f``; called on a batch dict, returns one logit per row.
    device : torch.device
        Where the network trains and scores.
    epoch_history : list of dict
        One record per epoch of the last :meth:`fit`.
    """

    kind = "deep"
    config: DeepFixedEffectConfig

    def __init__(self, config: DeepFixedEffectConfig) -> None:
        super().__init__(config)
        _check_config(config)
        self.device = resolve_device(config.device)
        self.encoder: DeepEncoder | None = None
        self.network: nn.Module | None = None
        self.epoch_history: list[dict[str, Any]] = []
        self._n_fits = 0
        self._on_device: dict[int, tuple[weakref.ref[DeepDesign], DeepDesign]] = {}
        # The training table's feed, kept between fits (weakly keyed by the design)
        self._feed: tuple[weakref.ref[DeepDesign], TrainingFeed] | None = None
        # (network, torch.compile'd network), made once per network
        self._compiled: tuple[nn.Module, nn.Module] | None = None
        self._steps = 0  # optimiser steps of the current fit (learning-rate warm-up)
        # (network, process group, DistributedDataParallel wrapper), made once per network
        self._ddp: tuple[nn.Module, Any, nn.Module] | None = None

    # -- data ---------------------------------------------------------------
    @property
    def schema(self) -> InputSchema:
        """Input schema of the network."""
        assert self.encoder is not None, "build() first"
        return self.encoder.schema

    def build(self, frame: pd.DataFrame) -> None:
        """Build the encoder (index maps, vocabulary, statistics) and a fresh network."""
        where = f"training data, coordinate '{self.name}'"
        self.encoder = DeepEncoder.build(frame, self.config, where)
        self.features = self.encoder.features
        self.network = self._new_network()

    def _new_network(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            net = build_network(self.config.architecture, self.schema)
        return net.to(self.device)

    def columns(self) -> list[str]:
        """Data columns this coordinate reads."""
        text = [self.config.text.column] if self.config.text is not None else []
        return self.config.features.columns() + text

    def design(self, frame: pd.DataFrame, where: str, *, training: bool = False) -> DeepDesign:
        """Encode ``frame`` into a :class:`DeepDesign` (CPU tensors)."""
        assert self.encoder is not None, "build() first"
        return self.encoder.transform(frame, f"{where}, coordinate '{self.name}'")

    def _to_device(self, design: DeepDesign) -> DeepDesign:
        """``design`` on the network's device. Copies are cached (weakly, by identity) so
        that the training and validation tables move to a GPU once, not once per fit."""
        if self.device.type == "cpu":
            return design
        hit = self._on_device.get(id(design))
        if hit is not None and hit[0]() is design:
            return hit[1]
        moved = design.to(self.device)
        self._on_device = {k: v for k, v in self._on_device.items() if v[0]() is not None}
        self._on_device[id(design)] = (weakref.ref(design), moved)
        return moved

    # -- model --------------------------------------------------------------
    def fit(
        self,
        design: DeepDesign,
        y: np.ndarray,
        weight: np.ndarray,
        offset: np.ndarray,
        *,
        l2: float | None = None,
        validation: Validation | None = None,
    ) -> dict[str, Any]:
        """Train from the current weights; returns epoch diagnostics.

        Parameters
        ----------
        design : DeepDesign
            Training rows, from :meth:`design`.
        y, weight, offset : numpy.ndarray
            Labels (0/1), sample weights and offsets (the other coordinates' scores).
        l2 : float, optional
            Weight decay; defaults to the first value of the config's ``l2``.
        validation : Validation, optional
            Validation rows for early stopping (AUC of ``offset + f(x)``).
        """
        assert self.network is not None, "build() first"
        cfg, net = self.config, self.network
        l2 = float(self.params["l2"] if l2 is None else l2)
        n = len(design)
        if n == 0:
            raise DataError(f"coordinate '{self.name}': no training rows")
        world = _world()
        feed = self._feed_for(design, resident=world is not None)
        feed.set_targets(y, weight, offset)
        opt = self._optimizer(l2)
        seed = (cfg.seed * 1_000_003 + self._n_fits) % 2**63
        # The permutation is drawn where the rows are: on the device when resident.
        on_device = feed.mode == "resident" and world is None
        gen = torch.Generator(device=self.device if on_device else "cpu").manual_seed(seed)
        devices = [self.device] if self.device.type == "cuda" else []
        self._check_output(feed.rows(min(n, 2)))
        model = self._wrap(world) if world is not None else self._train_module()
        rank = world[1] if world is not None else 0
        start = time.perf_counter()
        with torch.random.fork_rng(devices=devices):
            # Dropout masks differ between ranks; the shuffling (gen) does not.
            torch.manual_seed((cfg.seed + self._n_fits + 1_000_033 * rank) % 2**63)
            best = self._validation_auc(validation, world)
            best_state = self._copy_state() if validation is not None else {}
            best_epoch, stale = 0, 0
            history: list[dict[str, Any]] = [{"epoch": 0, "validation_auc": best}]
            for epoch in range(1, cfg.max_epochs + 1):
                if world is None:
                    loss = self._epoch(model, opt, feed, gen)
                else:
                    perm = torch.randperm(n, generator=gen).to(self.device)
                    loss = self._epoch_ddp(model, world, opt, feed, perm)
                auc = self._validation_auc(validation, world)
                history.append({"epoch": epoch, "train_loss": loss, "validation_auc": auc})
                if auc is None:
                    best_epoch = epoch
                elif auc > best:  # type: ignore[operator]
                    best, best_epoch, best_state, stale = auc, epoch, self._copy_state(), 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
        if validation is not None:
            net.load_state_dict(best_state)
        seconds = time.perf_counter() - start
        self._n_fits += 1
        self.params, self.fitted, self.epoch_history = {"l2": l2}, True, history
        epochs = len(history) - 1
        diag = {
            "epochs": epochs,
            "best_epoch": best_epoch,
            "best_epoch_auc": best,
            "train_loss": history[-1].get("train_loss"),
            "examples_per_second": n * epochs / seconds if seconds > 0 else None,
            "device": str(self.device),
            "data_placement": feed.mode,
            "precision": "bf16" if self._bf16() else "fp32",
        }
        if world is not None:
            diag["world_size"] = world[2]
        return diag

    def _wrap(self, world: tuple[Any, int, int]) -> nn.Module:
        """The network in ``DistributedDataParallel`` (made once per network and group: a
        second wrapper of the same parameters would reduce their gradients twice)."""
        assert self.network is not None
        group = world[0]
        if self._ddp is None or self._ddp[0] is not self.network or self._ddp[1] is not group:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapper = DistributedDataParallel(
                self.network,
                device_ids=ids,
                output_device=ids[0] if ids else None,
                process_group=group,
                # Built-in networks use every parameter in every step; a custom one may not.
                find_unused_parameters=self.config.architecture.kind == "custom",
            )
            self._ddp = (self.network, group, wrapper)
        return self._ddp[2]

    def _epoch_ddp(
        self,
        model: nn.Module,
        world: tuple[Any, int, int],
        opt: torch.optim.Optimizer,
        feed: TrainingFeed,
        perm: torch.Tensor,
    ) -> float:
        """One data-parallel pass: this rank's share of every global minibatch. Its loss,
        the weighted sum over its rows times ``world size / global batch rows``, has
        gradients that DDP averages into the global minibatch's mean-loss gradient."""
        assert self.network is not None
        group, rank, size = world
        self.network.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        rows = 0
        y, weight, offset = feed.targets
        train = feed.features
        for idx, b in _shards(perm, max(self.config.batch_size, size), rank, size):
            self._warm_up(opt)
            with self._autocast():
                z = self._forward(train.take(idx), model)
            row_loss = F.binary_cross_entropy_with_logits(
                z.float() + offset[idx], y[idx], weight=weight[idx], reduction="sum"
            )
            opt.zero_grad(set_to_none=True)
            (row_loss * (size / b)).backward()
            opt.step()
            loss_sum += row_loss.detach()
            rows += len(idx)
        # Buffers (e.g. batch-norm statistics) as on rank 0, so every rank scores alike.
        for buffer in self.network.buffers():
            dist.broadcast(buffer, src=_rank0(group), group=group)
        totals = torch.stack([loss_sum, torch.tensor(float(rows), device=self.device).double()])
        dist.all_reduce(totals, group=group)
        return float(totals[0] / totals[1])

    def _epoch(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        feed: TrainingFeed,
        gen: torch.Generator,
    ) -> float:
        """One pass over the shuffled minibatches; returns the mean training loss."""
        assert self.network is not None
        self.network.train()
        loss_sum = torch.zeros((), device=self.device)
        for batch, y, weight, offset in feed.batches(self.config.batch_size, gen):
            self._warm_up(opt)
            with self._autocast():
                z = self._forward(batch, model)
            loss = F.binary_cross_entropy_with_logits(z.float() + offset, y, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
        return float(loss_sum) / feed.n

    # -- speed switches -----------------------------------------------------
    def _warm_up(self, opt: torch.optim.Optimizer) -> None:
        """Count a step; during the warm-up, set its learning rate (linear ramp)."""
        warmup = self.config.warmup_steps
        if self._steps < warmup:
            rate = self.config.effective_learning_rate() * (self._steps + 1) / warmup
            for group in opt.param_groups:
                group["lr"] = rate
        self._steps += 1

    def _feed_for(self, design: DeepDesign, *, resident: bool = False) -> TrainingFeed:
        """The training feed of ``design``: made once per training table (and placement),
        kept between fits so that later passes copy only the offsets."""
        cfg = self.config
        mode = "resident"
        if not resident and self.device.type == "cuda":
            if cfg.data_placement == "stream" or (
                cfg.data_placement == "auto" and not fits_on_device(design, self.device)
            ):
                mode = "stream"
        elif not resident and cfg.data_placement == "stream":
            mode = "stream"  # on the CPU: the chunked loop over rows in place
        if self._feed is not None:
            ref, feed = self._feed
            if ref() is design and feed.mode == mode and feed.device == self.device:
                return feed
        self._feed = None  # release the previous table's tensors first
        feed = TrainingFeed(design, self.device, mode, cfg.stream_chunk_rows)  # type: ignore[arg-type]
        me = weakref.ref(self)

        def release(_: object) -> None:
            # The training table is gone (training ended): free its device copy too.
            coord = me()
            if coord is not None and coord._feed is not None and coord._feed[1] is feed:
                coord._feed = None

        self._feed = (weakref.ref(design, release), feed)
        return feed

    def _optimizer(self, l2: float) -> torch.optim.Optimizer:
        """Adam or AdamW at the configured (scaled) rate, fused where configured."""
        assert self.network is not None
        cfg = self.config
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        fused = cfg.fused_optimizer == "on" or (
            cfg.fused_optimizer == "auto" and self.device.type == "cuda"
        )
        rate = cfg.effective_learning_rate()
        if cfg.warmup_steps:
            rate /= cfg.warmup_steps
        self._steps = 0
        kwargs: dict[str, Any] = {"fused": True} if fused else {}
        try:
            return opt_cls(self.network.parameters(), lr=rate, weight_decay=l2, **kwargs)
        except RuntimeError as err:
            raise ConfigError(
                f"coordinate '{self.name}': 'fused_optimizer: on' is not supported on "
                f"{self.device} by this torch ({torch.__version__}): {err}"
            ) from None

    def _bf16(self) -> bool:
        """Whether training runs under bf16 autocast (see ``precision``)."""
        cfg = self.config
        if cfg.precision != "auto":
            return cfg.precision == "bf16"
        return (
            self.device.type == "cuda"
            and cfg.batch_size >= _BF16_MIN_BATCH
            and torch.cuda.is_bf16_supported()
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self._bf16():
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _train_module(self) -> nn.Module:
        """The network for training steps: ``torch.compile``'d when configured."""
        assert self.network is not None
        mode = self.config.compile
        if mode == "off":
            return self.network
        if self._compiled is None or self._compiled[0] is not self.network:
            compiled = torch.compile(self.network, mode=mode, dynamic=False)
            self._compiled = (self.network, compiled)  # type: ignore[assignment]
        return self._compiled[1]

    def _check_output(self, batch: dict[str, torch.Tensor]) -> None:
        assert self.network is not None
        n = next(iter(batch.values())).shape[0]
        was_training = self.network.training
        self.network.eval()
        with torch.no_grad():
            out = self._forward(batch)
        self.network.train(was_training)
        if out.shape != (n,) or not out.is_floating_point():
            raise ConfigError(
                f"coordinate '{self.name}': the network must return one float logit per row, "
                f"shape ({n},) or ({n}, 1), for a batch of {n} rows. Got {out.dtype} of shape "
                f"{tuple(out.shape)}"
            )

    def _forward(
        self, batch: dict[str, torch.Tensor], module: nn.Module | None = None
    ) -> torch.Tensor:
        assert self.network is not None
        out = (module or self.network)(batch)
        return out.squeeze(-1) if out.dim() == 2 and out.shape[1] == 1 else out

    def _validation_auc(
        self, validation: Validation | None, world: tuple[Any, int, int] | None = None
    ) -> float | None:
        """AUC of ``offset + f(x)`` on the whole validation table. Under data parallelism
        every rank computes it and rank 0's value is used by all (identical decisions)."""
        if validation is None:
            return None
        s = self.score(self._to_device(validation.design))
        auc = roc_auc(validation.y, validation.offset + s, sample_weight=validation.weight)
        if world is not None:
            group = world[0]
            value = torch.tensor([auc], dtype=torch.float64, device=self.device)
            dist.broadcast(value, src=_rank0(group), group=group)
            auc = float(value.item())
        return auc

    def _copy_state(self) -> dict[str, torch.Tensor]:
        assert self.network is not None
        return {k: v.detach().clone() for k, v in self.network.state_dict().items()}

    def score(self, design: DeepDesign) -> np.ndarray:
        """Per-row logit ``f(x)`` (float64), in eval mode, in batches, without gradients."""
        assert self.network is not None
        net = self.network
        was_training = net.training
        net.eval()
        # Collected on the device and copied back once: no synchronisation per batch.
        out = torch.empty(len(design), dtype=torch.float64, device=self.device)
        step = max(self.config.batch_size, _SCORE_BATCH)
        with torch.no_grad():
            for s in range(0, len(design), step):
                batch = {k: t.to(self.device) for k, t in design.rows(s, s + step).items()}
                out[s : s + step] = self._forward(batch).double()
        net.train(was_training)
        return out.cpu().numpy()

    def get_state(self) -> dict[str, Any]:
        """Copy of the network's weights (on the CPU) and hyper-parameters."""
        state = {k: v.cpu() for k, v in self._copy_state().items()}
        return {"state_dict": state, "params": dict(self.params)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore weights from :meth:`get_state`."""
        assert self.network is not None
        self.network.load_state_dict(state["state_dict"])
        self.params = dict(state["params"])

    # -- persistence --------------------------------------------------------
    @classmethod
    def load(
        cls, folder: Path, config: DeepFixedEffectConfig, params: dict[str, Any]
    ) -> TorchFixedEffect:
        """Read a coordinate written by :meth:`save`.

        A model trained with ``device: cuda`` loads on a machine without a GPU with
        ``device: auto`` (the CPU) instead of failing.
        """
        if config.device == "cuda" and not torch.cuda.is_available():
            config = config.model_copy(update={"device": "auto"})
        coord = super().load(folder, config, params)
        assert isinstance(coord, TorchFixedEffect)
        return coord

    def _save_params(self, folder: Path) -> None:
        assert self.encoder is not None
        meta = {
            "format_version": _FORMAT,
            "encoder": self.encoder.to_dict(),
            "schema": self.schema.to_dict(),
            "architecture": self.config.architecture.model_dump(mode="json"),
        }
        (folder / "deep.json").write_text(json.dumps(meta, indent=1))
        state = {k: v.cpu() for k, v in self._copy_state().items()}
        torch.save(state, folder / "state_dict.pt")

    def _load_params(self, folder: Path) -> None:
        assert self.features is not None
        meta = json.loads((folder / "deep.json").read_text())
        if meta.get("format_version") != _FORMAT:
            raise ValueError(f"deep.json format version {meta.get('format_version')} unknown")
        self.encoder = DeepEncoder.from_dict(meta["encoder"], self.features)
        self.network = self._new_network()
        try:
            state = torch.load(folder / "state_dict.pt", map_location="cpu", weights_only=True)
            self.network.load_state_dict(state)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
            raise ValueError(f"state_dict.pt does not fit the architecture: {err}") from None
        self.network.to(self.device)

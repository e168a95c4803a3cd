"""Feeding training rows to a deep fixed effect's training loop.

A :class:`TrainingFeed` holds one training table for one device and hands out shuffled
minibatches without host work per batch:

- ``resident`` (CPU always; a GPU when the rows fit): features, labels, weights and
  offsets are tensors on the device. Each epoch draws one permutation on the device (a
  seeded :class:`torch.Generator` of that device) and every batch is an ``index_select``
  of its slice of the permutation.
- ``stream`` (a GPU when the rows do not fit): the features stay in host memory (pinned,
  so that copies are asynchronous), labels, weights and offsets on the device. Each epoch
  draws one permutation on the host and moves the rows in chunks of ``chunk_rows`` rows:
  a background thread gathers the next chunk into a pinned buffer while the device trains
  on the current one. Batches are consecutive slices of a chunk, so with ``chunk_rows`` a
  multiple of the batch size they are exactly the resident mode's batches.

The feature tensors are made once per table; between coordinate-descent passes only the
offsets change, and :meth:`TrainingFeed.set_targets` copies them into the tensor already
on the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch

from gdmix.deep.batches import DeepDesign

__all__ = ["Batch", "TrainingFeed", "design_bytes", "fits_on_device"]

#: One minibatch: feature tensors, labels, weights, offsets.
Batch = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]

#: Share of a GPU's free memory the resident training rows may take under ``auto``.
_RESIDENT_SHARE = 0.5


def design_bytes(design: DeepDesign) -> int:
    """Bytes of a design's tensors plus its label, weight and offset vectors (float32)."""
    return sum(t.numel() * t.element_size() for t in design.tensors.values()) + 12 * len(design)


def fits_on_device(design: DeepDesign, device: torch.device) -> bool:
    """Whether ``design`` takes under half of ``device``'s free memory (always on the CPU)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return design_bytes(design) < _RESIDENT_SHARE * free


class TrainingFeed:
    """Shuffled minibatches of one training table on one device.

    Parameters
    ----------
    design : DeepDesign
        The training rows (CPU tensors).
    device : torch.device
        The training device.
    mode : {"resident", "stream"}
        See the module docstring. On the CPU both keep the rows where they are;
        ``stream`` then still goes through the chunked loop (without pinning).
    chunk_rows : int
        Rows per chunk in ``stream`` mode.
    """

    def __init__(
        self,
        design: DeepDesign,
        device: torch.device,
        mode: Literal["resident", "stream"] = "resident",
        chunk_rows: int = 1 << 20,
    ) -> None:
        self.n = len(design)
        self.device = device
        self.mode = mode
        self.chunk_rows = max(1, int(chunk_rows))
        # A new DeepDesign around the tensors: the feed never keeps the caller's design
        # object alive (a coordinate drops its feed when that object is collected).
        if mode == "resident":
            self.features = DeepDesign(dict(design.to(device).tensors), self.n)
        elif device.type == "cuda":
            self.features = DeepDesign(
                {k: t.pin_memory() for k, t in design.tensors.items()}, self.n
            )
        else:
            self.features = DeepDesign(dict(design.tensors), self.n)
        # Labels, weights and offsets as the rows of one (3, n) tensor: one gather per
        # batch, and each gathered row is contiguous.
        self.targets = torch.zeros((3, self.n), dtype=torch.float32, device=device)
        self._source: tuple[int, int] | None = None

    def set_targets(self, y: np.ndarray, weight: np.ndarray, offset: np.ndarray) -> None:
        """Copy labels, weights and offsets into the device tensor (features untouched).

        Labels and weights are copied again only when other arrays are passed than last
        time.
        """
        if self._source != (id(y), id(weight)):
            for j, values in enumerate((y, weight)):
                self._copy_column(j, values)
            self._source = (id(y), id(weight))
        self._copy_column(2, offset)

    def _copy_column(self, j: int, values: np.ndarray) -> None:
        host = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        self.targets[j].copy_(host.to(self.device))

    def rows(self, stop: int) -> dict[str, torch.Tensor]:
        """The first ``stop`` rows' features, on the device (for shape checks)."""
        return {k: t[:stop].to(self.device) for k, t in self.features.tensors.items()}

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch of shuffled minibatches of ``batch_size`` rows (the last may be
        smaller). ``generator`` lives on the device in resident mode, on the CPU when
        streaming."""
        if self.mode == "resident":
            perm = torch.randperm(self.n, generator=generator, device=generator.device)
            for s in range(0, self.n, batch_size):
                idx = perm[s : s + batch_size]
                batch = {k: t.index_select(0, idx) for k, t in self.features.tensors.items()}
                t = self.targets.index_select(1, idx)
                yield batch, t[0], t[1], t[2]
            return
        yield from self._streamed(batch_size, generator)

    def _streamed(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        perm = torch.randperm(self.n, generator=generator)
        chunk = max(batch_size, self.chunk_rows // batch_size * batch_size)
        starts = list(range(0, self.n, chunk))
        cuda = self.device.type == "cuda"
        # Two (pinned) buffers: the thread fills one while the device reads the other. On
        # the CPU the batches are views of a buffer, read before the next one is asked for.
        buffers = [self._buffers(min(chunk, self.n), cuda) for _ in range(2)]
        copied: list[torch.cuda.Event | None] = [None] * len(buffers)
        with ThreadPoolExecutor(max_workers=1) as pool:

            def gather(i: int) -> Future[dict[str, torch.Tensor]]:
                b = i % len(buffers)
                event = copied[b]
                if event is not None:
                    event.synchronize()  # the device has finished reading this buffer
                idx = perm[starts[i] : starts[i] + chunk]
                return pool.submit(self._gather, idx, buffers[b])

            pending = gather(0)
            for i, start in enumerate(starts):
                host = pending.result()
                on_device = {k: t.to(self.device, non_blocking=True) for k, t in host.items()}
                if cuda:
                    event = torch.cuda.Event()
                    event.record()
                    copied[i % len(buffers)] = event
                if i + 1 < len(starts):
                    pending = gather(i + 1)
                idx = perm[start : start + chunk].to(self.device, non_blocking=cuda)
                targets = self.targets.index_select(1, idx)
                for s in range(0, len(idx), batch_size):
                    rows = {k: t[s : s + batch_size] for k, t in on_device.items()}
                    t = targets[:, s : s + batch_size]
                    yield rows, t[0], t[1], t[2]

    def _buffers(self, rows: int, pin: bool) -> dict[str, torch.Tensor]:
        out = {}
        for k, t in self.features.tensors.items():
            buf = torch.empty((rows, *t.shape[1:]), dtype=t.dtype)
            out[k] = buf.pin_memory() if pin else buf
        return out

    def _gather(
        self, idx: torch.Tensor, buffers: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        out = {}
        for k, t in self.features.tensors.items():
            view = buffers[k][: len(idx)]
            torch.index_select(t, 0, idx, out=view)
            out[k] = view
        return out

"""Row-ordered chunks of a table on disk, and the fixed effect's sums over them.

The streaming engine writes every table once into chunks of consecutive rows: the role
columns (label, weight, offset) and, for each linear fixed effect, its encoded design
(a dense block or a CSR matrix). An optimiser step then reads the chunks one at a time:
memory holds one chunk, however many rows the table has. :class:`StreamedLogistic`
gives the optimisers of :mod:`gdmix.solvers.lbfgs` those sums.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from gdmix.losses import task_code
from gdmix.solvers import fixed_kernels as fk

__all__ = ["Chunk", "ChunkStore", "StreamedLogistic"]


@dataclass
class Chunk:
    """Rows ``start:stop`` of a table: role arrays and the designs asked for."""

    start: int
    stop: int
    y: np.ndarray | None
    weight: np.ndarray
    offset: np.ndarray
    designs: dict[str, Any]


class ChunkStore:
    """Chunks of consecutive rows in a folder (``chunk-00000/`` ...), written in order.

    Parameters
    ----------
    folder : path
        An existing empty folder (the caller's scratch space).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.bounds: list[tuple[int, int]] = []
        self.n_features: dict[str, int] = {}

    @property
    def n_rows(self) -> int:
        """Rows written so far."""
        return self.bounds[-1][1] if self.bounds else 0

    def append(
        self,
        y: np.ndarray | None,
        weight: np.ndarray,
        offset: np.ndarray,
        designs: dict[str, Any],
    ) -> None:
        """Write the next chunk (its rows follow the previous chunk's)."""
        start = self.n_rows
        stop = start + len(weight)
        path = self.folder / f"chunk-{len(self.bounds):05d}"
        path.mkdir()
        # Only what differs from the defaults is stored: labels as int8 when they are
        # 0/1, weights unless all 1, offsets unless all 0.
        roles: dict[str, np.ndarray] = {}
        if y is not None:
            binary = bool(np.all((y == 0) | (y == 1)))
            roles["y"] = y.astype(np.int8) if binary else y
        if not np.all(weight == 1.0):
            roles["weight"] = weight
        if np.any(offset != 0.0):
            roles["offset"] = offset
        np.savez(path / "roles.npz", **roles)
        for name, X in designs.items():
            if sp.issparse(X):
                X = sp.csr_matrix(X)
                np.savez(path / f"{name}.csr.npz", data=X.data, indices=X.indices,
                         indptr=X.indptr, shape=np.array(X.shape))  # fmt: skip
            else:
                np.save(path / f"{name}.npy", np.ascontiguousarray(X))
            self.n_features[name] = int(X.shape[1])
        self.bounds.append((start, stop))

    def save_index(self) -> None:
        """Record the chunk bounds (for reading the store again)."""
        (self.folder / "chunks.json").write_text(
            json.dumps({"bounds": self.bounds, "n_features": self.n_features})
        )

    def chunks(self, designs: tuple[str, ...] = (), *, roles: bool = True) -> Iterator[Chunk]:
        """Read the chunks in row order, with the named designs."""
        for k, (start, stop) in enumerate(self.bounds):
            path = self.folder / f"chunk-{k:05d}"
            y = None
            weight = offset = np.zeros(0)
            if roles:
                n = stop - start
                with np.load(path / "roles.npz") as z:
                    weight = z["weight"] if "weight" in z.files else np.ones(n)
                    offset = z["offset"] if "offset" in z.files else np.zeros(n)
                    y = z["y"].astype(np.float64) if "y" in z.files else None
            out: dict[str, Any] = {}
            for name in designs:
                dense = path / f"{name}.npy"
                if dense.exists():
                    out[name] = np.load(dense)
                else:
                    with np.load(path / f"{name}.csr.npz") as z:
                        shape = tuple(int(v) for v in z["shape"])
                        out[name] = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape)
            yield Chunk(start, stop, y, weight, offset, out)

    def roles(self) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """``(y, weight, offset)`` of the whole table, in memory."""
        ys, ws, os_ = [], [], []
        for c in self.chunks():
            ys.append(c.y)
            ws.append(c.weight)
            os_.append(c.offset)
        if not ws:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        y = None if ys[0] is None else np.concatenate(ys)
        return y, np.concatenate(ws), np.concatenate(os_)


class StreamedLogistic:
    """The sums of :class:`gdmix.solvers.lbfgs.LogisticSums` over a :class:`ChunkStore`.

    Each call reads every chunk once and adds up the compiled, threaded sums of
    :mod:`gdmix.solvers.fixed_kernels`, so the optimiser reaches the same optimum as in
    memory. The state kept between calls is the point itself (or the Hessian summed in
    the same pass), never a per-row array.

    Parameters
    ----------
    store : ChunkStore
        The table's chunks.
    name : str
        The design (the fixed-effect coordinate) to read.
    offset_of : callable
        ``offset_of(start, stop)``: the other coordinates' scores of those rows, added
        to the stored offset.
    task : {"logistic", "linear", "poisson"}
        The loss (:mod:`gdmix.losses`).
    """

    def __init__(
        self,
        store: ChunkStore,
        name: str,
        offset_of: Callable[[int, int], np.ndarray],
        task: str = "logistic",
    ) -> None:
        self.store, self.name, self.offset_of = store, name, offset_of
        self.task, self.code = task, task_code(task)
        self.n_features = store.n_features[name]
        first = next(store.chunks((name,), roles=False), None)
        work = fk.hessian_work(first.designs[name]) if first is not None else (0.0, 1.0)
        self.hessian_cost = work[0] / max(work[1], 1.0)
        #: Passes over the chunks so far.
        self.n_reads = 0

    def _chunks(self) -> Iterator[tuple[fk.Design, np.ndarray, np.ndarray, np.ndarray]]:
        self.n_reads += 1
        for c in self.store.chunks((self.name,)):
            assert c.y is not None
            o = c.offset + self.offset_of(c.start, c.stop)
            yield fk.prepare(c.designs[self.name]), c.y, c.weight, o

    def moments(self) -> tuple[float, np.ndarray, np.ndarray, float]:
        """``(sum s, X^T s, (X * X)^T s, sum s y)``."""
        p = self.n_features
        total, xs, xxs, sy = 0.0, np.zeros(p), np.zeros(p), 0.0
        for X, y, s, _ in self._chunks():
            t, a, b = fk.column_moments(X, s)
            total, xs, xxs, sy = total + t, xs + a, xxs + b, sy + float(s @ y)
        return total, xs, xxs, sy

    def value_grad(
        self, w: np.ndarray, b: float, *, diag: bool = False, hessian: bool = False
    ) -> tuple[float, np.ndarray, float, Any, tuple[float, np.ndarray, np.ndarray] | None]:
        """Loss and gradient sums at ``(w, b)`` (and the Hessian, when announced)."""
        p = self.n_features
        loss, xg, gsum = 0.0, np.zeros(p), 0.0
        dsum, xd = 0.0, np.zeros((2, p))
        pieces: list[Any] | None = None
        for X, y, s, o in self._chunks():
            if hessian:
                f, g, gs, _, part = fk.value_grad_hessian(X, y, s, o, w, b, task=self.code)
                pieces = (
                    list(part)
                    if pieces is None
                    else [a + c for a, c in zip(pieces, part, strict=True)]
                )
            else:
                f, g, gs, d, part_xd = fk.value_grad(X, y, s, o, w, b, diag=diag, task=self.code)
                if diag:
                    dsum += float(d.sum())
                    xd += part_xd
            loss, xg, gsum = loss + f, xg + g, gsum + gs
        state = ("hessian", tuple(pieces)) if pieces is not None else ("point", w.copy(), b)
        return loss, xg, gsum, state, (dsum, xd[0], xd[1]) if diag else None

    def _curvatures(self, state: Any) -> Iterator[tuple[fk.Design, np.ndarray]]:
        _, w, b = state
        for X, y, s, o in self._chunks():
            yield X, fk.value_grad(X, y, s, o, w, b, task=self.code)[3]

    def hess_vec(self, state: Any, v: np.ndarray, vb: float) -> tuple[np.ndarray, float]:
        """Hessian of the loss sum at the state's point applied to ``(v, vb)``."""
        if state[0] == "hessian":
            H, hd, ds = state[1]
            return H @ v + hd * vb, float(hd @ v + ds * vb)
        hv, hb = np.zeros(self.n_features), 0.0
        for X, d in self._curvatures(state):
            a, c = fk.hess_vec(X, d, v, vb)
            hv, hb = hv + a, hb + c
        return hv, hb

    def hessian(self, state: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """Hessian pieces of the loss sum at the state's point."""
        if state[0] == "hessian":
            return state[1]
        p = self.n_features
        H, hd, ds = np.zeros((p, p)), np.zeros(p), 0.0
        for X, d in self._curvatures(state):
            a, c, e = fk.hessian(X, d)
            H, hd, ds = H + a, hd + c, ds + e
        return H, hd, ds

"""Per-coordinate scorers of the service: one request's rows in one vectorised pass.

Each scorer reads its columns from a :class:`~gdmix.serving.schema.Request` and returns
one score per row, equal to what the coordinate's batch ``score`` gives for the same rows
(same encoding, same order of the sums):

- :class:`LinearScorer` (fixed linear effect) and :class:`RandomScorer` (random effect)
  encode the rows into the coordinate's feature layout (numeric block, categorical
  columns through a level -> column dict, bag entries through a key -> column dict, text
  columns through the saved vocabulary and idf, hashed columns through the hash, both by
  the batch encoders themselves) and take the dot products in one compiled loop, in
  column order;
- :class:`TorchScorer` builds the deep fixed effect's input tensors as its encoder does
  and runs the network in inference mode;
- :class:`GBDTScorer` builds the LightGBM design (numeric values, categorical codes,
  bag columns) and calls the booster's predictor.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from gdmix.data.features import FeatureIndex
from gdmix.serving.schema import Request
from gdmix.serving.tables import RandomTable, canonical_id, level_string
from gdmix.solvers.rows import coef_at

__all__ = ["GBDTScorer", "LinearScorer", "RandomScorer", "ShardEncoder", "TorchScorer"]


@numba.njit(cache=True)
def _fixed_kernel(num, cat, bptr, bcol, bval, w, b, out):  # type: ignore[no-untyped-def]
    for i in range(num.shape[0]):
        acc = 0.0
        for j in range(num.shape[1]):
            acc += num[i, j] * w[j]
        for c in range(cat.shape[1]):
            col = cat[i, c]
            if col >= 0:
                acc += w[col]
        for q in range(bptr[i], bptr[i + 1]):
            acc += bval[q] * w[bcol[q]]
        out[i] = acc + b


@numba.njit(cache=True)
def _random_dense_kernel(num, cat, bptr, bcol, bval, rows, coef, icpt, out):  # type: ignore[no-untyped-def]
    for i in range(num.shape[0]):
        e = rows[i]
        acc = 0.0
        if e >= 0:
            acc = icpt[e]
            for j in range(num.shape[1]):
                acc += num[i, j] * coef[e, j]
            for c in range(cat.shape[1]):
                col = cat[i, c]
                if col >= 0:
                    acc += coef[e, col]
            for q in range(bptr[i], bptr[i + 1]):
                acc += bval[q] * coef[e, bcol[q]]
        out[i] = acc


@numba.njit(cache=True)
def _random_sparse_kernel(num, cat, bptr, bcol, bval, rows, cptr, cfeat, cval, icpt, out):  # type: ignore[no-untyped-def]
    for i in range(num.shape[0]):
        e = rows[i]
        acc = 0.0
        if e >= 0:
            acc = icpt[e]
            for j in range(num.shape[1]):
                v = num[i, j]
                if v != 0.0:
                    acc += v * coef_at(cptr, cfeat, cval, e, j)
            for c in range(cat.shape[1]):
                col = cat[i, c]
                if col >= 0:
                    acc += coef_at(cptr, cfeat, cval, e, col)
            for q in range(bptr[i], bptr[i + 1]):
                acc += bval[q] * coef_at(cptr, cfeat, cval, e, bcol[q])
        out[i] = acc


class ShardEncoder:
    """A feature shard's index map as lookup tables, for encoding request rows.

    Design columns are laid out as in :class:`~gdmix.data.features.FeatureIndex`:
    numeric columns, then one column per level of each categorical column, then one per
    key of each bag column, then the text and hashed blocks (encoded by the index's own
    :class:`~gdmix.data.text_features.TextVocabulary` and
    :class:`~gdmix.data.hashing.HashedBlock`, as in batch scoring).

    Parameters
    ----------
    features : FeatureIndex
        The coordinate's index map.
    kinds : dict of str to str
        Kind of value each column was trained on (the manifest's ``columns``).
    """

    def __init__(self, features: FeatureIndex, kinds: dict[str, str]) -> None:
        self.features = features
        self.numeric = tuple(features.numeric)
        start = len(self.numeric)
        self.categorical: list[tuple[str, dict[str, int], str | None]] = []
        for col, levels in features.categorical.items():
            table = {level: start + i for i, level in enumerate(levels)}
            self.categorical.append((col, table, kinds.get(col)))
            start += len(levels)
        self.bag_start = start
        self.bags: list[tuple[str, dict[str, int]]] = []
        for col, keys in features.bags.items():
            self.bags.append((col, {key: start + i for i, key in enumerate(keys)}))
            start += len(keys)
        self.raw_start = start
        self.kinds = kinds
        start += sum(len(v) for v in features.text.values())
        start += sum(h.n_buckets for h in features.hashed)
        self.n_features = start

    def numeric_block(self, request: Request) -> np.ndarray:
        """The numeric columns as a C-ordered ``(n, n_numeric)`` float64 block."""
        return request.numeric_block(self.numeric)

    def category_columns(self, request: Request) -> np.ndarray:
        """Design column of every row's level, per categorical column, ``(n, n_cat)``
        int64; -1 for null or a level not seen in training."""
        out = np.full((request.n, len(self.categorical)), -1, dtype=np.int64)
        for c, (col, table, kind) in enumerate(self.categorical):
            memo: dict[Any, int] = {}
            for i, value in enumerate(request.levels(col, kind)):
                if value is None:
                    continue
                code = memo.get(value)
                if code is None:
                    code = memo[value] = table.get(level_string(value), -1)  # type: ignore[arg-type]
                out[i, c] = code
        return out

    def bag_entries(
        self, request: Request, *, local: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR rows ``(indptr, columns, values)`` of the bag features seen in training:
        repeated keys of a row summed, columns increasing (``local``: counted from the
        first bag column)."""
        n = request.n
        indptr = np.zeros(n + 1, dtype=np.int64)
        if not self.bags:
            return indptr, np.zeros(0, dtype=np.int64), np.zeros(0)
        per_row: list[dict[int, float]] = [{} for _ in range(n)]
        for col, table in self.bags:
            for i, items in enumerate(request.bags(col)):
                acc = per_row[i]
                for key, value in items:
                    j = table.get(key)
                    if j is not None:
                        acc[j] = acc[j] + value if j in acc else value
        cols: list[int] = []
        vals: list[float] = []
        for i, acc in enumerate(per_row):
            for j in sorted(acc):
                cols.append(j)
                vals.append(acc[j])
            indptr[i + 1] = len(cols)
        columns = np.array(cols, dtype=np.int64)
        if local:
            columns -= self.bag_start
        return indptr, columns, np.array(vals, dtype=np.float64)

    def sparse_entries(self, request: Request) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR rows ``(indptr, columns, values)`` of the bag, text and hashed features,
        columns increasing."""
        bags = self.bag_entries(request)
        f = self.features
        if not f.text and not f.hashed:
            return bags
        n = request.n
        blocks = []
        if self.raw_start > self.bag_start:
            indptr, columns, values = bags
            blocks.append(sp.csr_matrix((values, columns - self.bag_start, indptr),
                                        shape=(n, self.raw_start - self.bag_start)))  # fmt: skip
        for col, vocab in f.text.items():
            blocks.append(vocab.transform(request.texts(col)))
        for block in f.hashed:
            levels = []
            for c in block.columns:
                values = [level_string(v) for v in request.levels(c, self.kinds.get(c))]
                levels.append(np.array(values, dtype=object))
            blocks.append(block.encode_levels(levels, n))
        mat = blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr")
        mat = sp.csr_matrix(mat, dtype=np.float64)
        mat.sort_indices()
        return (mat.indptr.astype(np.int64), mat.indices.astype(np.int64) + self.bag_start,
                mat.data)  # fmt: skip

    def encode(self, request: Request) -> tuple[np.ndarray, ...]:
        """``(numeric block, categorical columns, indptr, columns, values)``: the last
        three the CSR rows of the bag, text and hashed features."""
        return (self.numeric_block(request), self.category_columns(request),
                *self.sparse_entries(request))  # fmt: skip

    def columns(self) -> list[str]:
        """Request fields the shard reads."""
        return self.features.columns()


class LinearScorer:
    """A fixed linear effect: ``x . w + b`` per row.

    Parameters
    ----------
    coordinate : FixedLinearEffect
        The loaded coordinate.
    kinds : dict of str to str
        Kind of every column in training.
    """

    kind = "fixed"

    def __init__(self, coordinate: Any, kinds: dict[str, str]) -> None:
        self.name = coordinate.name
        self.encoder = ShardEncoder(coordinate.features, kinds)
        self.coef = np.ascontiguousarray(coordinate.coef, dtype=np.float64)
        self.intercept = float(coordinate.intercept)

    def score(self, request: Request) -> np.ndarray:
        """One score per row."""
        out = np.empty(request.n)
        _fixed_kernel(*self.encoder.encode(request), self.coef, self.intercept, out)
        return out

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows of the coordinate."""
        return {"name": self.name, "type": self.kind, "n_features": self.encoder.n_features}


class RandomScorer:
    """A random effect: ``b_e + x . w_e`` for the row's entity ``e``, 0 when unseen.

    Parameters
    ----------
    name : str
        The coordinate's name.
    entity : str
        Its entity-id column.
    features : FeatureIndex
        Its index map.
    table : RandomTable
        Entity lookup and coefficients.
    kinds : dict of str to str
        Kind of every column in training.
    """

    kind = "random"

    def __init__(
        self,
        name: str,
        entity: str,
        features: FeatureIndex,
        table: RandomTable,
        kinds: dict[str, str],
    ) -> None:
        self.name = name
        self.entity = entity
        self.encoder = ShardEncoder(features, kinds)
        self.table = table

    def rows(self, request: Request) -> np.ndarray:
        """Table row of every request row's entity (-1: unseen)."""
        kind = self.table.entities.kind
        keys, ok = [], np.empty(request.n, dtype=np.bool_)
        memo: dict[Any, tuple[Any, bool]] = {}  # equal JSON values have one canonical key
        for i, value in enumerate(request.entity_ids(self.entity)):
            canonical = memo.get(value)
            if canonical is None:
                canonical = memo[value] = canonical_id(value, kind)
            keys.append(canonical[0])
            ok[i] = canonical[1]
        return self.table.entities.rows(keys, ok)

    def score(self, request: Request) -> np.ndarray:
        """One score per row."""
        encoded = self.encoder.encode(request)
        rows = self.rows(request)
        out = np.empty(request.n)
        t = self.table
        if t.coef is not None:
            _random_dense_kernel(*encoded, rows, t.coef, t.intercept, out)
        else:
            _random_sparse_kernel(*encoded, rows, t.indptr, t.indices, t.values, t.intercept,
                                  out)  # fmt: skip
        return out

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows of the coordinate."""
        return {
            "name": self.name,
            "type": self.kind,
            "entity": self.entity,
            "n_entities": len(self.table.entities),
            "entity_key": self.table.entities.kind,
            "n_features": self.encoder.n_features,
            "coefficients": "sparse" if self.table.sparse else "dense",
            "source": self.table.source,
        }


class GBDTScorer:
    """A LightGBM fixed effect: the booster's raw score.

    Parameters
    ----------
    coordinate : GBDTFixedEffect
        The loaded coordinate.
    kinds : dict of str to str
        Kind of every column in training.
    """

    kind = "gbdt"

    def __init__(self, coordinate: Any, kinds: dict[str, str]) -> None:
        self.name = coordinate.name
        self.encoder = ShardEncoder(coordinate.features, kinds)
        self.booster = coordinate.booster
        # Per categorical column, its levels' codes (0, 1, ... within the column).
        self.codes = [
            (col, {level: float(i) for i, level in enumerate(coordinate.features.categorical[col])},
             kind)
            for col, _, kind in self.encoder.categorical
        ]  # fmt: skip
        self.n_numeric = len(self.encoder.numeric)
        self.n_bag_columns = self.encoder.n_features - self.encoder.bag_start

    def design(self, request: Request) -> np.ndarray | sp.csr_matrix:
        """The booster's input, as :meth:`GBDTFixedEffect.design` builds it."""
        n, k = request.n, self.n_numeric
        dense = np.empty((n, k + len(self.codes)), dtype=np.float64)
        dense[:, :k] = self.encoder.numeric_block(request)
        for c, (col, table, kind) in enumerate(self.codes):
            for i, value in enumerate(request.levels(col, kind)):
                level = level_string(value)
                dense[i, k + c] = table.get(level, np.nan) if level is not None else np.nan
        if not self.encoder.bags:
            return dense
        indptr, columns, values = self.encoder.bag_entries(request, local=True)
        bags = sp.csr_matrix((values, columns, indptr), shape=(n, self.n_bag_columns))
        return sp.hstack([sp.csr_matrix(dense), bags], format="csr", dtype=np.float64)

    def score(self, request: Request) -> np.ndarray:
        """One score per row."""
        if self.booster is None:
            return np.zeros(request.n)
        out = self.booster.predict(self.design(request), raw_score=True, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows of the coordinate."""
        trees = self.booster.num_trees() if self.booster is not None else 0
        return {"name": self.name, "type": self.kind, "n_trees": trees,
                "n_features": self.encoder.n_features}  # fmt: skip


class TorchScorer:
    """A deep fixed effect: the network's logit, in inference mode.

    Parameters
    ----------
    coordinate : TorchFixedEffect
        The loaded coordinate (its network is put in eval mode and owned by the scorer).
    kinds : dict of str to str
        Kind of every column in training.
    """

    kind = "deep"

    def __init__(self, coordinate: Any, kinds: dict[str, str]) -> None:
        import torch

        self._torch = torch
        encoder = coordinate.encoder
        self.name = coordinate.name
        self.device = coordinate.device
        self.network = coordinate.network
        self.network.eval()
        self.numeric = list(encoder.features.numeric)
        self.mean, self.std = encoder.mean, encoder.std
        self.categorical: list[tuple[str, dict[str, int] | None, int, str | None]] = []
        for col in encoder.categorical:
            if col in encoder.hashed:
                self.categorical.append((col, None, encoder.hashed[col], kinds.get(col)))
            else:
                levels = encoder.features.categorical[col]
                table = {level: i + 1 for i, level in enumerate(levels)}
                self.categorical.append((col, table, 0, kinds.get(col)))
        # Bag ids count from 1 across every bag column, in index-map order (0 pads).
        self.bags: list[tuple[str, dict[str, int]]] = []
        start = 1
        for col, keys in encoder.features.bags.items():
            self.bags.append((col, {key: start + i for i, key in enumerate(keys)}))
            start += len(keys)
        self.tokenizer = encoder.tokenizer
        self.text_column = encoder.text_column

    def tensors(self, request: Request) -> dict[str, Any]:
        """The network's input batch, as :class:`~gdmix.deep.batches.DeepEncoder` makes it."""
        from gdmix.deep.text import hash_bucket

        torch, n = self._torch, request.n
        if self.numeric:
            cols = [request.numeric(c) for c in self.numeric]
            numeric = (np.column_stack(cols) - self.mean) / self.std
        else:
            numeric = np.zeros((n, 0))
        codes = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, (col, table, buckets, kind) in enumerate(self.categorical):
            for i, value in enumerate(request.levels(col, kind)):
                level = level_string(value)
                if level is None:
                    continue
                if table is None:
                    codes[i, j] = hash_bucket(level, buckets) + 1
                else:
                    codes[i, j] = table.get(level, 0)
        batch = {
            "numeric": torch.from_numpy(np.ascontiguousarray(numeric, dtype=np.float32)),
            "categorical": torch.from_numpy(codes),
        }
        if self.bags:
            per_row: list[list[tuple[int, float]]] = [[] for _ in range(n)]
            for col, table in self.bags:
                for i, items in enumerate(request.bags(col)):
                    per_row[i].extend((table[k], v) for k, v in items if k in table)
            width = max((len(r) for r in per_row), default=0)
            ids = np.zeros((n, width), dtype=np.int64)
            values = np.zeros((n, width), dtype=np.float32)
            for i, entries in enumerate(per_row):
                for q, (bag_id, value) in enumerate(entries):
                    ids[i, q], values[i, q] = bag_id, value
            batch["bag_ids"] = torch.from_numpy(ids)
            batch["bag_values"] = torch.from_numpy(values)
        if self.tokenizer is not None:
            assert self.text_column is not None
            texts = np.array(request.texts(self.text_column), dtype=object)
            batch["tokens"] = torch.from_numpy(self.tokenizer.encode(texts))
        return {k: t.to(self.device) for k, t in batch.items()}

    def score(self, request: Request) -> np.ndarray:
        """One score per row."""
        batch = self.tensors(request)
        with self._torch.inference_mode():
            out = self.network(batch)
            if out.dim() == 2 and out.shape[1] == 1:
                out = out.squeeze(-1)
            return out.double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows of the coordinate."""
        n_params = sum(int(p.numel()) for p in self.network.parameters())
        return {"name": self.name, "type": self.kind, "parameters": n_params,
                "device": str(self.device)}  # fmt: skip

"""Encoding tables into batch-ready tensors for deep fixed effects.

A :class:`DeepEncoder` is built once from the training table (index maps, numeric
standardisation, text vocabulary, hash buckets) and saved with the model; it turns any
table into a :class:`DeepDesign`, a dict of row-aligned CPU tensors:

``numeric``
    float32 ``(n, n_numeric)``: numeric columns, standardised with training means and
    standard deviations.
``categorical``
    int64 ``(n, n_categorical)``: one code per categorical column; 0 is a level not
    seen in training (or null), levels seen in training are 1, 2, ... For a hashed
    column the code is ``1 + hash_bucket(value, buckets)``.
``bag_ids``, ``bag_values`` (only with bag features)
    int64 / float32 ``(n, width)``: the row's bag features seen in training (ids 1, 2,
    ... across every bag column) and their values, padded with id 0 and value 0.
``tokens`` (only with a text column)
    int64 ``(n, max_length)``: token ids (see :class:`gdmix.deep.text.Tokenizer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from gdmix.config_base import FeatureConfig
from gdmix.config_deep import DeepFixedEffectConfig
from gdmix.data.features import FeatureIndex, _bag_arrays, _category_strings
from gdmix.data.schema import check_finite_numeric, require_columns
from gdmix.deep.text import Tokenizer, hash_buckets, text_values

__all__ = ["DeepDesign", "DeepEncoder", "InputSchema"]


@dataclass
class InputSchema:
    """What a network's inputs look like; passed to every architecture's constructor.

    Attributes
    ----------
    numeric : list of str
        Numeric columns (the width of ``batch["numeric"]``).
    categorical : dict of str to int
        For each categorical column (in ``batch["categorical"]`` order) its number of
        codes, the unknown code 0 included: the size of its embedding table.
    n_bag_ids : int
        Size of the bag id table (padding id 0 included); 0 without bag features.
    vocab_size : int
        Size of the token id table (padding and OOV included); 0 without text.
    max_length : int
        Width of ``batch["tokens"]``; 0 without text.
    """

    numeric: list[str] = field(default_factory=list)
    categorical: dict[str, int] = field(default_factory=dict)
    n_bag_ids: int = 0
    vocab_size: int = 0
    max_length: int = 0

    @property
    def n_numeric(self) -> int:
        """Number of numeric inputs."""
        return len(self.numeric)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes of the categorical columns, in batch order."""
        return list(self.categorical.values())

    @property
    def has_bags(self) -> bool:
        """Whether batches hold ``bag_ids`` / ``bag_values``."""
        return self.n_bag_ids > 0

    @property
    def has_text(self) -> bool:
        """Whether batches hold ``tokens``."""
        return self.vocab_size > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "n_bag_ids": self.n_bag_ids,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
        }


@dataclass
class DeepDesign:
    """Row-aligned tensors of one table (see the module docstring for the keys)."""

    tensors: dict[str, torch.Tensor]
    n_rows: int

    def __len__(self) -> int:
        return self.n_rows

    def to(self, device: torch.device | str) -> DeepDesign:
        """The same design on ``device`` (``self`` when it is there already)."""
        device = torch.device(device)
        if all(t.device == device for t in self.tensors.values()):
            return self
        moved = {k: t.to(device, non_blocking=True) for k, t in self.tensors.items()}
        return DeepDesign(moved, self.n_rows)

    def take(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of rows ``index``."""
        return {k: t.index_select(0, index) for k, t in self.tensors.items()}

    def rows(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        """The batch of rows ``start:stop`` (views, no copy)."""
        return {k: t[start:stop] for k, t in self.tensors.items()}


class DeepEncoder:
    """Index maps and statistics that turn a table into a :class:`DeepDesign`.

    Build it with :meth:`build` from the training table.

    Parameters
    ----------
    features : FeatureIndex
        Index map of the numeric, (non-hashed) categorical and bag features.
    categorical : list of str
        Every categorical column in batch order, hashed ones included.
    hashed : dict of str to int
        Hashed categorical columns and their number of buckets.
    mean, std : list of float
        Standardisation of the numeric columns.
    tokenizer : Tokenizer or None
        Tokenizer of ``text_column``.
    text_column : str or None
        The text column.
    """

    def __init__(
        self,
        features: FeatureIndex,
        categorical: list[str],
        hashed: dict[str, int],
        mean: list[float],
        std: list[float],
        tokenizer: Tokenizer | None = None,
        text_column: str | None = None,
    ) -> None:
        self.features = features
        self.categorical = list(categorical)
        self.hashed = dict(hashed)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.tokenizer = tokenizer
        self.text_column = text_column
        self._bag_offsets: dict[str, int] = {}
        start = 1
        for col, keys in self.features.bags.items():
            self._bag_offsets[col] = start
            start += len(keys)
        self._n_bag_ids = start if self.features.bags else 0

    @classmethod
    def build(cls, frame: pd.DataFrame, config: DeepFixedEffectConfig, where: str) -> DeepEncoder:
        """Build the encoder of ``config``'s inputs from the training table ``frame``."""
        spec = config.features
        text_col = config.text.column if config.text is not None else None
        require_columns(frame, spec.columns() + ([text_col] if text_col else []), where)
        plain = [c for c in spec.categorical if c not in config.hash_buckets]
        indexed = FeatureConfig(numeric=spec.numeric, categorical=plain, bags=spec.bags)
        features = FeatureIndex.build(frame, indexed, where)
        mean, std = [], []
        for col in spec.numeric:
            values = check_finite_numeric(frame, col, where)
            sd = float(values.std()) if len(values) else 0.0
            mean.append(float(values.mean()) if len(values) else 0.0)
            std.append(sd if sd > 1e-12 else 1.0)
        tokenizer = None
        if config.text is not None:
            t = config.text
            tokenizer = Tokenizer(
                t.max_length, t.min_count, t.max_vocab, t.lowercase, t.max_length_cap
            )
            tokenizer.fit(text_values(frame[t.column], where))
        hashed = {c: int(config.hash_buckets[c]) for c in spec.categorical if c not in plain}
        return cls(features, list(spec.categorical), hashed, mean, std, tokenizer, text_col)

    @property
    def schema(self) -> InputSchema:
        """The :class:`InputSchema` of the designs this encoder makes."""
        cards = {
            c: self.hashed[c] + 1 if c in self.hashed else len(self.features.categorical[c]) + 1
            for c in self.categorical
        }
        tok = self.tokenizer
        return InputSchema(
            numeric=list(self.features.numeric),
            categorical=cards,
            n_bag_ids=self._n_bag_ids,
            vocab_size=tok.vocab_size if tok is not None else 0,
            max_length=(tok.max_length or 0) if tok is not None else 0,
        )

    def columns(self) -> list[str]:
        """Data columns the encoder reads."""
        cols = [*self.features.numeric, *self.categorical, *self.features.bags]
        return cols + ([self.text_column] if self.text_column else [])

    def transform(self, frame: pd.DataFrame, where: str) -> DeepDesign:
        """Encode ``frame`` into tensors (on the CPU)."""
        require_columns(frame, self.columns(), where)
        n = len(frame)
        if self.features.numeric:
            cols = [check_finite_numeric(frame, c, where) for c in self.features.numeric]
            numeric = (np.column_stack(cols) - self.mean) / self.std
        else:
            numeric = np.zeros((n, 0))
        codes = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, col in enumerate(self.categorical):
            strs = _category_strings(frame[col])
            if col in self.hashed:
                codes[:, j] = hash_buckets(strs, self.hashed[col]) + 1
            else:
                levels = pd.Index(self.features.categorical[col], dtype=object)
                codes[:, j] = levels.get_indexer(strs) + 1
        tensors = {
            "numeric": torch.from_numpy(np.ascontiguousarray(numeric, dtype=np.float32)),
            "categorical": torch.from_numpy(codes),
        }
        if self.features.bags:
            ids, values = self._bags(frame, n, where)
            tensors["bag_ids"] = torch.from_numpy(ids)
            tensors["bag_values"] = torch.from_numpy(values)
        if self.tokenizer is not None:
            assert self.text_column is not None
            texts = text_values(frame[self.text_column], where)
            at = f"{where}, text column '{self.text_column}'"
            tensors["tokens"] = torch.from_numpy(self.tokenizer.encode(texts, at))
        return DeepDesign(tensors, n)

    def _bags(self, frame: pd.DataFrame, n: int, where: str) -> tuple[np.ndarray, np.ndarray]:
        rows_parts, id_parts, value_parts = [], [], []
        for col, keys in self.features.bags.items():
            rows, k, v = _bag_arrays(frame, col, where)
            idx = pd.Index(keys).get_indexer(k) if len(k) else np.zeros(0, dtype=np.int64)
            keep = idx >= 0
            rows_parts.append(rows[keep])
            id_parts.append(idx[keep].astype(np.int64) + self._bag_offsets[col])
            value_parts.append(v[keep])
        rows = np.concatenate(rows_parts)
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        counts = np.bincount(rows, minlength=n)
        width = int(counts.max()) if n and len(rows) else 0
        pos = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        ids = np.zeros((n, width), dtype=np.int64)
        values = np.zeros((n, width), dtype=np.float32)
        ids[rows, pos] = np.concatenate(id_parts)[order]
        values[rows, pos] = np.concatenate(value_parts)[order]
        return ids, values

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, without the feature index map (saved as ``features.json``)."""
        return {
            "categorical": self.categorical,
            "hashed": self.hashed,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "text_column": self.text_column,
            "tokenizer": self.tokenizer.to_dict() if self.tokenizer is not None else None,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], features: FeatureIndex) -> DeepEncoder:
        """Inverse of :meth:`to_dict`."""
        tok = raw["tokenizer"]
        return cls(
            features,
            list(raw["categorical"]),
            {k: int(v) for k, v in raw["hashed"].items()},
            list(raw["mean"]),
            list(raw["std"]),
            Tokenizer.from_dict(tok) if tok is not None else None,
            raw["text_column"],
        )

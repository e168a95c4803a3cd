"""Built-in architectures of the deep fixed effect, and loading of custom ones.

Every network is constructed as ``Net(schema, **settings)`` (``schema`` an
:class:`~gdmix.deep.batches.InputSchema`) and called on a batch dict (see
:mod:`gdmix.deep.batches`); it returns one logit per row, shape ``(n,)``.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import torch
from torch import nn

from gdmix.deep.batches import InputSchema
from gdmix.errors import ConfigError

__all__ = [
    "DLRMNet",
    "LinearPart",
    "MLPNet",
    "TextCNNNet",
    "WideDeepNet",
    "build_network",
    "load_custom_class",
]


def _mlp(in_dim: int, hidden: list[int], dropout: float, out_dim: int | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class _Embeddings(nn.Module):
    """One embedding table per categorical column, stored as one table with offsets."""

    def __init__(self, cardinalities: list[int], dim: int) -> None:
        super().__init__()
        self.n_columns = len(cardinalities)
        self.table = _embedding(max(sum(cardinalities), 1), dim)
        starts = [0]
        for c in cardinalities[:-1]:
            starts.append(starts[-1] + c)
        self.register_buffer("starts", torch.tensor(starts, dtype=torch.long), persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """``(n, n_columns, dim)`` embeddings of ``codes`` ``(n, n_columns)``."""
        return self.table(codes + self.starts[: self.n_columns])


def _embedding(n: int, dim: int, padding: bool = False) -> nn.Embedding:
    """An embedding table initialised with N(0, 1/dim) (padding row 0 at zero)."""
    table = nn.Embedding(n, dim, padding_idx=0 if padding else None)
    with torch.no_grad():
        nn.init.normal_(table.weight, std=1.0 / math.sqrt(dim))
        if padding:
            table.weight[0].zero_()
    return table


def _bag_sum(table: nn.Embedding, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Value-weighted sum of the bag features' embeddings, ``(n, dim)``."""
    return (table(batch["bag_ids"]) * batch["bag_values"].unsqueeze(-1)).sum(1)


def _text_mean(table: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    """Mean embedding of the non-padding tokens, ``(n, dim)`` (zeros for empty texts)."""
    mask = (tokens != 0).unsqueeze(-1).to(table.weight.dtype)
    return (table(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class LinearPart(nn.Module):
    """Linear logit: numeric weights, one weight per categorical level and per bag feature.

    Starts at zero, like a logistic regression.
    """

    def __init__(self, schema: InputSchema) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.numeric = nn.Parameter(torch.zeros(schema.n_numeric))
        self.categorical = _Embeddings(schema.cardinalities, 1)
        nn.init.zeros_(self.categorical.table.weight)
        self.bags = nn.Embedding(schema.n_bag_ids, 1, padding_idx=0) if schema.has_bags else None
        if self.bags is not None:
            nn.init.zeros_(self.bags.weight)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logit per row, ``(n,)``."""
        out = batch["numeric"] @ self.numeric + self.bias
        if self.categorical.n_columns:
            out = out + self.categorical(batch["categorical"]).sum((1, 2))
        if self.bags is not None:
            out = out + _bag_sum(self.bags, batch).squeeze(-1)
        return out


class _DeepInputs(nn.Module):
    """Numeric features, categorical embeddings, bag and mean text embeddings, concatenated."""

    def __init__(self, schema: InputSchema, dim: int) -> None:
        super().__init__()
        self.embeddings = _Embeddings(schema.cardinalities, dim)
        self.bags = _embedding(schema.n_bag_ids, dim, True) if schema.has_bags else None
        self.words = _embedding(schema.vocab_size, dim, True) if schema.has_text else None
        n_vectors = len(schema.cardinalities) + (self.bags is not None) + (self.words is not None)
        self.width = schema.n_numeric + dim * n_vectors

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [batch["numeric"]]
        if self.embeddings.n_columns:
            parts.append(self.embeddings(batch["categorical"]).flatten(1))
        if self.bags is not None:
            parts.append(_bag_sum(self.bags, batch))
        if self.words is not None:
            parts.append(_text_mean(self.words, batch["tokens"]))
        return torch.cat(parts, dim=1)


class MLPNet(nn.Module):
    """MLP over the numeric features and embeddings of the categorical, bag and text inputs."""

    def __init__(
        self, schema: InputSchema, hidden: list[int], embedding_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.inputs = _DeepInputs(schema, embedding_dim)
        if self.inputs.width == 0:
            raise ConfigError("the deep fixed effect has no input: give it features or text")
        self.body = _mlp(self.inputs.width, hidden, dropout, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logit per row, ``(n,)``."""
        return self.body(self.inputs(batch)).squeeze(-1)


class WideDeepNet(nn.Module):
    """Wide & deep: :class:`LinearPart` plus :class:`MLPNet`."""

    def __init__(
        self, schema: InputSchema, hidden: list[int], embedding_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.wide = LinearPart(schema)
        self.deep = MLPNet(schema, hidden, embedding_dim, dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logit per row, ``(n,)``."""
        return self.wide(batch) + self.deep(batch)


class TextCNNNet(nn.Module):
    """Text CNN plus a linear logit (the GDMix paper's MovieLens model).

    Word embeddings, one convolution (``filters`` filters of ``width`` tokens), ReLU,
    max-pool over the windows that start on a real token, dense layers to one logit,
    added to :class:`LinearPart` over the other features.
    """

    def __init__(
        self,
        schema: InputSchema,
        embedding_dim: int,
        filters: int,
        width: int,
        hidden: list[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not schema.has_text:
            raise ConfigError(
                "architecture 'text_cnn' needs a text column: set 'text: {column: ...}'"
            )
        self.width = width
        self.words = _embedding(schema.vocab_size, embedding_dim, True)
        self.conv = nn.Conv1d(embedding_dim, filters, width)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dense = _mlp(filters, hidden, dropout, 1)
        self.linear = LinearPart(schema)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logit per row, ``(n,)``."""
        tokens = batch["tokens"]
        if tokens.shape[1] < self.width:
            tokens = nn.functional.pad(tokens, (0, self.width - tokens.shape[1]))
        h = torch.relu(self.conv(self.words(tokens).transpose(1, 2)))
        valid = tokens[:, : h.shape[2]] != 0
        valid[:, 0] = True
        pooled = h.masked_fill(~valid.unsqueeze(1), 0.0).amax(dim=2)
        return self.dense(self.dropout(pooled)).squeeze(-1) + self.linear(batch)


class DLRMNet(nn.Module):
    """DLRM-style: bottom MLP, embedding tables, pairwise dot interactions, top MLP.

    The bottom MLP maps the numeric features to one ``embedding_dim`` vector (a last
    layer of that width is added when ``bottom`` does not end with it). Every
    categorical column, the bag features (value-weighted sum) and the text (mean of word
    embeddings) give one vector each. The top MLP reads the bottom vector and the dot
    products of every pair of vectors.
    """

    def __init__(
        self,
        schema: InputSchema,
        bottom: list[int],
        top: list[int],
        embedding_dim: int,
        wide: bool = False,
    ) -> None:
        super().__init__()
        d = embedding_dim
        self.wide = LinearPart(schema) if wide else None
        self.bottom = None
        if schema.n_numeric:
            widths = list(bottom) if bottom and bottom[-1] == d else [*bottom, d]
            self.bottom = _mlp(schema.n_numeric, widths[:-1], 0.0, widths[-1])
        self.embeddings = _Embeddings(schema.cardinalities, d)
        self.bags = _embedding(schema.n_bag_ids, d, True) if schema.has_bags else None
        self.words = _embedding(schema.vocab_size, d, True) if schema.has_text else None
        n_vec = (
            (self.bottom is not None)
            + len(schema.cardinalities)
            + (self.bags is not None)
            + (self.words is not None)
        )
        rows, cols = torch.triu_indices(n_vec, n_vec, offset=1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)
        top_in = (d if self.bottom is not None else 0) + len(rows)
        if top_in == 0:
            raise ConfigError(
                "architecture 'dlrm' needs numeric features or at least two embedded inputs "
                "(categorical columns, bags, text)"
            )
        self.top = _mlp(top_in, top, 0.0, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logit per row, ``(n,)``."""
        vectors, dense = [], []
        if self.bottom is not None:
            b = self.bottom(batch["numeric"])
            vectors.append(b.unsqueeze(1))
            dense.append(b)
        if self.embeddings.n_columns:
            vectors.append(self.embeddings(batch["categorical"]))
        if self.bags is not None:
            vectors.append(_bag_sum(self.bags, batch).unsqueeze(1))
        if self.words is not None:
            vectors.append(_text_mean(self.words, batch["tokens"]).unsqueeze(1))
        v = torch.cat(vectors, dim=1)
        dots = torch.bmm(v, v.transpose(1, 2))[:, self.pair_rows, self.pair_cols]
        out = self.top(torch.cat([*dense, dots], dim=1)).squeeze(-1)
        return out + self.wide(batch) if self.wide is not None else out


def load_custom_class(path: str) -> type[nn.Module]:
    """Import ``"package.module:ClassName"``; raise :class:`ConfigError` when it fails."""
    module_name, _, class_name = path.partition(":")
    where = f"'architecture.module' {path!r}"
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ConfigError(
            f"{where}: cannot import module '{module_name}' ({type(err).__name__}: {err})"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"{where}: module '{module_name}' has no attribute '{class_name}'")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"{where}: '{class_name}' is not a torch.nn.Module subclass")
    return cls


def build_network(architecture: Any, schema: InputSchema) -> nn.Module:
    """The network of an architecture config (``DeepFixedEffectConfig.architecture``).

    Raises
    ------
    ConfigError
        When the architecture does not fit the inputs, or a custom module cannot be
        imported or constructed.
    """
    a = architecture
    if a.kind == "mlp":
        return MLPNet(schema, a.hidden, a.embedding_dim, a.dropout)
    if a.kind == "wide_deep":
        return WideDeepNet(schema, a.hidden, a.embedding_dim, a.dropout)
    if a.kind == "text_cnn":
        return TextCNNNet(schema, a.embedding_dim, a.filters, a.width, a.hidden, a.dropout)
    if a.kind == "dlrm":
        return DLRMNet(schema, a.bottom, a.top, a.embedding_dim, a.wide)
    if a.kind == "custom":
        cls = load_custom_class(a.module)
        try:
            return cls(schema, **a.kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"'architecture.kwargs': cannot construct {a.module}(schema, **{a.kwargs}): {err}"
            ) from None
    raise ConfigError(f"'architecture.kind': unknown architecture {a.kind!r}")

"""Configuration of the deep (PyTorch) and GBDT (LightGBM) fixed effects.

These schemas live apart from the coordinate implementations so that a config can be
validated without importing torch or lightgbm.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gdmix.config_base import CoordinateBase, L2Value, StrictModel

__all__ = [
    "CustomArchitecture",
    "DLRMArchitecture",
    "DeepFixedEffectConfig",
    "GBDTFixedEffectConfig",
    "MLPArchitecture",
    "TextCNNArchitecture",
    "TextConfig",
    "WideDeepArchitecture",
]


class TextConfig(StrictModel):
    """A tokenised text column (e.g. a movie title).

    Attributes
    ----------
    column : str
        The text column.
    max_length : int or None
        Tokens kept per row (longer texts are truncated, shorter ones padded). ``None``
        (the default) follows the training data: the 95th percentile of the training
        texts' token counts, at least 1 and at most ``max_length_cap``. The value chosen
        is saved with the model. Truncation is logged as a warning with the share of rows
        cut.
    max_length_cap : int
        Upper bound of the data-driven ``max_length``.
    min_count : int
        Tokens seen fewer times in training map to the out-of-vocabulary id.
    max_vocab : int or None
        Keep only the most frequent tokens.
    lowercase : bool
        Lower-case before splitting on non-alphanumeric characters.
    """

    column: str
    max_length: int | None = Field(default=None, ge=1)
    max_length_cap: int = Field(default=256, ge=1)
    min_count: int = Field(default=1, ge=1)
    max_vocab: int | None = Field(default=50_000, ge=1)
    lowercase: bool = True


class MLPArchitecture(StrictModel):
    """MLP over numeric features plus embeddings of categorical features."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    embedding_dim: int = Field(default=8, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class WideDeepArchitecture(StrictModel):
    """A linear (wide) part on every feature plus an MLP with embeddings (deep)."""

    kind: Literal["wide_deep"] = "wide_deep"
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    embedding_dim: int = Field(default=8, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class TextCNNArchitecture(StrictModel):
    """The paper's MovieLens model: word embeddings, one convolution, max-pool, dense,
    added to a linear logit over the other features."""

    kind: Literal["text_cnn"] = "text_cnn"
    embedding_dim: int = Field(default=64, ge=1)
    filters: int = Field(default=50, ge=1)
    width: int = Field(default=3, ge=1)
    hidden: list[int] = Field(default_factory=list)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class DLRMArchitecture(StrictModel):
    """DLRM-style: bottom MLP on numeric features, embedding tables, pairwise dot
    interactions, top MLP. ``wide`` adds a linear logit over every feature (first-order
    terms, as in a factorization machine)."""

    kind: Literal["dlrm"] = "dlrm"
    bottom: list[int] = Field(default_factory=lambda: [64, 16])
    top: list[int] = Field(default_factory=lambda: [64, 32])
    embedding_dim: int = Field(default=16, ge=1)
    wide: bool = False


class CustomArchitecture(StrictModel):
    """Your own ``torch.nn.Module``.

    Attributes
    ----------
    module : str
        Importable class, ``"package.module:ClassName"``. It is constructed as
        ``Class(schema, **kwargs)`` where ``schema`` describes the inputs (numeric width,
        categorical cardinalities, vocabulary size), and called on a batch dict; it must
        return one logit per row.
    kwargs : dict
        Keyword arguments of the constructor (JSON-serialisable; saved with the model).
    """

    kind: Literal["custom"] = "custom"
    module: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


Architecture = Annotated[
    MLPArchitecture
    | WideDeepArchitecture
    | TextCNNArchitecture
    | DLRMArchitecture
    | CustomArchitecture,
    Field(discriminator="kind"),
]


class DeepFixedEffectConfig(CoordinateBase):
    """A fixed effect whose ``f(x)`` is a PyTorch module.

    Trained with Adam/AdamW on ``BCEWithLogits(offset + f(x))`` over minibatches, with
    early stopping on the validation metric. ``l2`` is the optimiser's weight decay (a
    list is searched like any ``l2``). ``features`` are the numeric, categorical and bag
    inputs; ``text`` adds a tokenised text column.

    Attributes
    ----------
    architecture : one of the architectures
        The network (``kind``: mlp, wide_deep, text_cnn, dlrm, custom).
    text : TextConfig or None
        Tokenised text input.
    hash_buckets : dict of str to int
        Categorical columns hashed into this many buckets instead of an index map
        (unbounded cardinalities).
    optimizer : {"adam", "adamw"}
    learning_rate, batch_size, max_epochs, patience : training settings
        ``patience``: epochs without validation improvement before stopping.
    device : {"auto", "cpu", "cuda"}
        ``auto`` uses a GPU when one is present.
    seed : int
        Seed of initialisation and shuffling (deterministic on CPU).
    lr_scaling : {"none", "sqrt", "linear"}
        Learning-rate rule for large batches. With ``sqrt`` (advised for Adam) the rate
        used is ``learning_rate * sqrt(batch_size / lr_reference_batch)``, with ``linear``
        ``learning_rate * batch_size / lr_reference_batch``; ``none`` uses
        ``learning_rate`` as it is.
    lr_reference_batch : int or None
        The batch size ``learning_rate`` was tuned at; needed by ``sqrt`` and ``linear``.
    warmup_steps : int
        The rate rises linearly from ``rate / warmup_steps`` to ``rate`` over the first
        steps of each fit (0: no warm-up).
    data_placement : {"auto", "device", "stream"}
        Where the training rows live during a fit on a GPU. ``device``: every tensor
        (features, labels, weights, offsets) on the GPU, batches drawn by a permutation
        made on the GPU; ``stream``: features stay in pinned host memory and travel in
        chunks of ``stream_chunk_rows`` rows; ``auto``: ``device`` when the training rows
        take under half of the GPU's free memory. On the CPU the rows are used in place.
    stream_chunk_rows : int
        Rows per host-to-device chunk when streaming (rounded down to a multiple of
        ``batch_size``).
    fused_optimizer : {"auto", "on", "off"}
        Adam/AdamW's fused kernel (``fused=True``): one kernel updates every parameter.
        ``auto``: on for CUDA, off on the CPU (where it changes the rounding, and so the
        trajectory, of the established CPU runs).
    precision : {"auto", "fp32", "bf16"}
        ``bf16`` runs the forward and backward passes under bf16 autocast (weights and
        optimiser state stay float32); ``auto``: bf16 on a GPU that supports it when
        ``batch_size`` is at least 4096 (small batches are launch-bound: autocast only
        adds casts), float32 otherwise. Scoring is always float32.
    compile : {"off", "default", "reduce-overhead", "max-autotune"}
        ``torch.compile`` mode of the network's training forward pass (``reduce-overhead``
        uses CUDA graphs); ``off`` runs eagerly. Compiling takes seconds to minutes and
        pays off only for long fits.
    """

    type: Literal["deep"] = "deep"
    l2: L2Value | list[L2Value] = 0.0
    architecture: Architecture = Field(default_factory=MLPArchitecture)
    text: TextConfig | None = None
    hash_buckets: dict[str, int] = Field(default_factory=dict)
    optimizer: Literal["adam", "adamw"] = "adam"
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=512, ge=1)
    max_epochs: int = Field(default=20, ge=1)
    patience: int = Field(default=2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    lr_scaling: Literal["none", "sqrt", "linear"] = "none"
    lr_reference_batch: int | None = Field(default=None, ge=1)
    warmup_steps: int = Field(default=0, ge=0)
    data_placement: Literal["auto", "device", "stream"] = "auto"
    stream_chunk_rows: int = Field(default=1 << 20, ge=1)
    fused_optimizer: Literal["auto", "on", "off"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"

    @model_validator(mode="after")
    def _check_lr_rule(self) -> DeepFixedEffectConfig:
        if self.lr_scaling != "none" and self.lr_reference_batch is None:
            raise ValueError(
                f"coordinate '{self.name}': 'lr_scaling' {self.lr_scaling!r} needs "
                "'lr_reference_batch', the batch size 'learning_rate' was tuned at"
            )
        return self

    def effective_learning_rate(self) -> float:
        """The learning rate after ``lr_scaling`` (before warm-up)."""
        if self.lr_scaling == "none" or self.lr_reference_batch is None:
            return self.learning_rate
        ratio = self.batch_size / self.lr_reference_batch
        return self.learning_rate * (ratio**0.5 if self.lr_scaling == "sqrt" else ratio)


class GBDTFixedEffectConfig(CoordinateBase):
    """A fixed effect that is a LightGBM model, trained with the other coordinates'
    scores as ``init_score``. ``l2`` is LightGBM's ``lambda_l2``.

    Attributes
    ----------
    n_estimators, learning_rate, num_leaves, min_data_in_leaf : LightGBM settings
    early_stopping_rounds : int
        Stop when validation has not improved for this many rounds.
    params : dict
        Any other LightGBM parameters, passed through.
    seed : int
    """

    type: Literal["gbdt"] = "gbdt"
    l2: L2Value | list[L2Value] = 0.0
    n_estimators: int = Field(default=500, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    min_data_in_leaf: int = Field(default=20, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0

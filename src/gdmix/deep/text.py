"""Text and hashed categorical inputs of deep fixed effects.

:class:`Tokenizer` turns a text column into a padded matrix of token ids, with a
vocabulary built from the training data only (saved with the model as JSON).
:func:`hash_bucket` maps an unbounded categorical value to a bucket with a stable hash
(BLAKE2b), the same in every process and on every machine, unlike Python's salted
``hash()``.

Neither needs torch: both produce numpy arrays.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from gdmix.errors import DataError

__all__ = [
    "DEFAULT_LENGTH_QUANTILE",
    "OOV_ID",
    "PAD_ID",
    "Tokenizer",
    "data_max_length",
    "hash_bucket",
    "hash_buckets",
    "text_values",
]

logger = logging.getLogger("gdmix")

#: Token id of padding (also what an empty text encodes to).
PAD_ID = 0
#: Token id of every token outside the vocabulary.
OOV_ID = 1
#: Quantile of the training texts' token counts that a data-driven ``max_length`` keeps whole.
DEFAULT_LENGTH_QUANTILE = 0.95
_TOKEN = re.compile(r"[^\W_]+")


def hash_bucket(value: str, buckets: int) -> int:
    """Stable bucket of ``value`` in ``[0, buckets)``.

    The first 8 bytes of the BLAKE2b digest of the UTF-8 text, read little-endian, modulo
    ``buckets``. It does not depend on the process, the platform or ``PYTHONHASHSEED``.
    """
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


def hash_buckets(values: np.ndarray, buckets: int) -> np.ndarray:
    """:func:`hash_bucket` of every string of ``values`` (int64); ``None`` maps to -1.

    Each distinct value is hashed once.
    """
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    table = np.array([hash_bucket(str(u), buckets) for u in uniques], dtype=np.int64)
    out = np.full(len(codes), -1, dtype=np.int64)
    known = codes >= 0
    out[known] = table[codes[known]]
    return out


def text_values(series: pd.Series, where: str) -> np.ndarray:
    """The strings of a text column (nulls become empty texts), or raise :class:`DataError`.

    Parameters
    ----------
    series : pandas.Series
        The column; its non-null values must be ``str``.
    where : str
        Prefix of error messages (table and coordinate).
    """
    values = series.to_numpy(dtype=object)
    nulls = series.isna().to_numpy()
    bad = np.array([not isinstance(v, str) for v in values]) & ~nulls
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: text column '{series.name}' must hold strings. Got "
            f"{type(values[i]).__name__} {values[i]!r} at row {i} ({int(bad.sum())} such rows)"
        )
    values = values.copy()
    values[nulls] = ""
    return values


class Tokenizer:
    """Word tokenizer with a training-data vocabulary, OOV id, padding and truncation.

    Texts are (optionally) lower-cased and split into runs of letters and digits. Id
    ``PAD_ID`` (0) pads, ``OOV_ID`` (1) stands for any token outside the vocabulary, and
    the vocabulary's tokens get ids 2, 3, ... in order of decreasing training frequency
    (ties by the token's text).

    Parameters
    ----------
    max_length : int or None
        Tokens kept per text: longer texts are truncated (their first tokens kept),
        shorter ones padded at the end. ``None``: chosen by :meth:`fit`, the 95th
        percentile of the training texts' token counts (rounded up), between 1 and
        ``max_length_cap``.
    min_count : int
        Tokens seen fewer times in the training texts are out of vocabulary.
    max_vocab : int or None
        Keep at most this many (most frequent) tokens.
    lowercase : bool
        Lower-case before splitting.
    max_length_cap : int
        Largest data-driven ``max_length``.

    Attributes
    ----------
    max_length : int or None
        The width of :meth:`encode`'s output (``None`` until :meth:`fit` chooses it).
    length_from_data : bool
        Whether :meth:`fit` chose ``max_length`` from the training texts.
    """

    def __init__(
        self,
        max_length: int | None = None,
        min_count: int = 1,
        max_vocab: int | None = None,
        lowercase: bool = True,
        max_length_cap: int = 256,
    ) -> None:
        self.max_length = max_length
        self.length_from_data = max_length is None
        self.max_length_cap = max_length_cap
        self.min_count = min_count
        self.max_vocab = max_vocab
        self.lowercase = lowercase
        self.vocab: list[str] = []
        self._ids: dict[str, int] = {}

    @property
    def vocab_size(self) -> int:
        """Number of ids, padding and OOV included (the embedding table's size)."""
        return len(self.vocab) + 2

    def tokenize(self, text: str) -> list[str]:
        """Tokens of one text."""
        return _TOKEN.findall(text.lower() if self.lowercase else text)

    def fit(self, texts: Iterable[str]) -> Tokenizer:
        """Build the vocabulary from (training) texts; returns ``self``.

        Without a ``max_length``, also choose it from the texts' token counts.
        """
        counts: Counter[str] = Counter()
        lengths = []
        for text in texts:
            tokens = self.tokenize(text)
            counts.update(tokens)
            lengths.append(len(tokens))
        if self.length_from_data:
            self.max_length = data_max_length(lengths, self.max_length_cap)
        kept = sorted(
            ((tok, n) for tok, n in counts.items() if n >= self.min_count),
            key=lambda item: (-item[1], item[0]),
        )
        if self.max_vocab is not None:
            kept = kept[: self.max_vocab]
        self._set_vocab([tok for tok, _ in kept])
        return self

    def _set_vocab(self, vocab: list[str]) -> None:
        self.vocab = list(vocab)
        self._ids = {tok: i + 2 for i, tok in enumerate(self.vocab)}

    def _width(self) -> int:
        if self.max_length is None:
            raise ValueError("Tokenizer.max_length is None: call fit() first or set it")
        return self.max_length

    def encode_one(self, text: str) -> list[int]:
        """Token ids of one text, truncated but not padded."""
        toks = self.tokenize(text)[: self._width()]
        return [self._ids.get(t, OOV_ID) for t in toks]

    def encode(self, texts: Iterable[str] | np.ndarray, where: str | None = None) -> np.ndarray:
        """Token id matrix (int64, ``(n, max_length)``), padded with ``PAD_ID``.

        Each distinct text is tokenised once. When some texts have more than
        ``max_length`` tokens, a warning on the ``gdmix`` logger gives the share of rows
        truncated.

        Parameters
        ----------
        texts : iterable of str
            The texts.
        where : str, optional
            Names the table (and column) in the warning.
        """
        width = self._width()
        codes, uniques = pd.factorize(pd.Series(list(texts), dtype=object))
        table = np.full((len(uniques), width), PAD_ID, dtype=np.int64)
        cut = np.zeros(len(uniques), dtype=bool)
        for i, text in enumerate(uniques):
            toks = self.tokenize(text)
            cut[i] = len(toks) > width
            ids = [self._ids.get(t, OOV_ID) for t in toks[:width]]
            table[i, : len(ids)] = ids
        if not len(codes):
            return np.zeros((0, width), dtype=np.int64)
        n_cut = int(np.count_nonzero(cut[codes])) if cut.any() else 0
        if n_cut:
            self._warn_truncation(n_cut, len(codes), where)
        return table[codes]

    def _warn_truncation(self, n_cut: int, n: int, where: str | None) -> None:
        chosen = (
            f"chosen from the training data ({DEFAULT_LENGTH_QUANTILE:.0%} of training texts "
            f"fit, cap {self.max_length_cap})"
            if self.length_from_data
            else "set in the config"
        )
        logger.warning(
            "%s%.1f%% of rows (%d of %d) have more than max_length=%d tokens and are truncated "
            "(max_length %s); set 'text.max_length' to keep more",
            f"{where}: " if where else "",
            100.0 * n_cut / n,
            n_cut,
            n,
            self.max_length,
            chosen,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (settings and vocabulary), saved with the model."""
        return {
            "max_length": self.max_length,
            "length_from_data": self.length_from_data,
            "max_length_cap": self.max_length_cap,
            "min_count": self.min_count,
            "max_vocab": self.max_vocab,
            "lowercase": self.lowercase,
            "vocab": self.vocab,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Tokenizer:
        """Inverse of :meth:`to_dict`."""
        tok = cls(
            max_length=int(raw["max_length"]),
            min_count=int(raw["min_count"]),
            max_vocab=raw["max_vocab"],
            lowercase=bool(raw["lowercase"]),
            max_length_cap=int(raw.get("max_length_cap", 256)),
        )
        tok.length_from_data = bool(raw.get("length_from_data", False))
        tok._set_vocab([str(t) for t in raw["vocab"]])
        return tok


def data_max_length(lengths: Iterable[int], cap: int) -> int:
    """Data-driven ``max_length``: the :data:`DEFAULT_LENGTH_QUANTILE` quantile of the
    token counts ``lengths``, rounded up, between 1 and ``cap``.

    Parameters
    ----------
    lengths : iterable of int
        Token counts of the training texts.
    cap : int
        Largest value returned.
    """
    counts = np.fromiter(lengths, dtype=np.int64)
    if not len(counts):
        return 1
    q = float(np.quantile(counts, DEFAULT_LENGTH_QUANTILE, method="inverted_cdf"))
    return int(min(max(math.ceil(q), 1), cap))

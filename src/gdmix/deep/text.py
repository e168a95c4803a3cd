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
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from gdmix.errors import DataError

__all__ = ["OOV_ID", "PAD_ID", "Tokenizer", "hash_bucket", "hash_buckets", "text_values"]

#: Token id of padding (also what an empty text encodes to).
PAD_ID = 0
#: Token id of every token outside the vocabulary.
OOV_ID = 1
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
    max_length : int
        Tokens kept per text: longer texts are truncated (their first tokens kept),
        shorter ones padded at the end.
    min_count : int
        Tokens seen fewer times in the training texts are out of vocabulary.
    max_vocab : int or None
        Keep at most this many (most frequent) tokens.
    lowercase : bool
        Lower-case before splitting.
    """

    def __init__(
        self,
        max_length: int = 16,
        min_count: int = 1,
        max_vocab: int | None = None,
        lowercase: bool = True,
    ) -> None:
        self.max_length = max_length
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
        """Build the vocabulary from (training) texts; returns ``self``."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(self.tokenize(text))
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

    def encode_one(self, text: str) -> list[int]:
        """Token ids of one text, truncated but not padded."""
        toks = self.tokenize(text)[: self.max_length]
        return [self._ids.get(t, OOV_ID) for t in toks]

    def encode(self, texts: Iterable[str] | np.ndarray) -> np.ndarray:
        """Token id matrix (int64, ``(n, max_length)``), padded with ``PAD_ID``.

        Each distinct text is tokenised once.
        """
        codes, uniques = pd.factorize(pd.Series(list(texts), dtype=object))
        table = np.full((len(uniques), self.max_length), PAD_ID, dtype=np.int64)
        for i, text in enumerate(uniques):
            ids = self.encode_one(text)
            table[i, : len(ids)] = ids
        return table[codes] if len(codes) else np.zeros((0, self.max_length), dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (settings and vocabulary), saved with the model."""
        return {
            "max_length": self.max_length,
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
        )
        tok._set_vocab([str(t) for t in raw["vocab"]])
        return tok

"""Text columns as word n-gram features (``features.text``).

A text is lower-cased (``lowercase``), cut into tokens by ``token_pattern`` (every
match; with one capturing group, the group), and its terms are the tokens and the runs
of ``n`` consecutive tokens joined by one space, for ``n`` in ``ngram_range``. Null is
the empty text. The vocabulary is every term of the training texts found in at least
``min_df`` and at most ``max_df`` of them (an integer: that many texts; a float: that
share of them), then, with ``max_features``, the ones occurring most often (ties in
alphabetical order); its terms are sorted alphabetically and are the block's columns.

Values are term counts, or with ``tfidf`` the counts (``1 + ln(count)`` with
``sublinear_tf``) times the smooth inverse document frequency
``idf = ln((1 + n) / (1 + df)) + 1`` of the training texts (``n`` texts, ``df`` of them
holding the term), each row then scaled to unit L2 norm (an empty row stays empty).
These are scikit-learn's ``CountVectorizer`` / ``TfidfVectorizer`` for the same settings;
the tests compare both.

A :class:`TextVocabulary` is built in two steps so that it can come from several parts
of the data (the streaming and dask engines read the training data in batches): each
part counts, per term, the texts holding it and its occurrences
(:meth:`TextVocabulary.count`); parts add up (:meth:`TextVocabulary.union`); the
vocabulary and idf follow from the totals the first time they are asked for. A saved
vocabulary holds its terms and idf only.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gdmix.errors import DataError

__all__ = ["TextVocabulary", "analyze", "text_values"]

#: The settings saved with a vocabulary (those of :class:`gdmix.config.TextFeatureConfig`
#: that scoring needs, and the pruning ones for the record).
_SETTINGS = ("ngram_range", "lowercase", "token_pattern", "min_df", "max_df", "max_features",
             "tfidf", "sublinear_tf")  # fmt: skip


def analyze(text: str, pattern: re.Pattern[str], lowercase: bool, ngram_range: Any) -> list[str]:
    """The terms of one text, in order: its tokens (when ``ngram_range`` starts at 1),
    then its runs of 2, 3, ... tokens joined by a space.

    Parameters
    ----------
    text : str
        The text.
    pattern : compiled regular expression
        A token is each of its matches (the group when it has one).
    lowercase : bool
        Lower-case first.
    ngram_range : (int, int)
        Smallest and largest run length.

    Returns
    -------
    list of str
    """
    if lowercase:
        text = text.lower()
    tokens = pattern.findall(text)
    lo, hi = int(ngram_range[0]), int(ngram_range[1])
    if hi == 1:
        return tokens
    terms = list(tokens) if lo == 1 else []
    n_tokens = len(tokens)
    for n in range(max(lo, 2), min(hi, n_tokens) + 1):
        terms.extend(" ".join(tokens[i : i + n]) for i in range(n_tokens - n + 1))
    return terms


def text_values(frame: pd.DataFrame, column: str, where: str) -> list[str]:
    """The texts of ``frame[column]`` (null is the empty text).

    Raises
    ------
    DataError
        When a non-null value is not a string.
    """
    series = frame[column]
    values = series.to_numpy(dtype=object, na_value=None)
    out: list[str] = []
    for i, v in enumerate(values.tolist()):
        if isinstance(v, str):
            out.append(v)
        elif v is None or (isinstance(v, float) and v != v):
            out.append("")
        else:
            raise DataError(
                f"{where}: text column '{column}' must hold strings (or nulls). Got "
                f"{type(v).__name__} {v!r} (row {i})"
            )
    return out


class TextVocabulary:
    """Vocabulary (and idf) of one text column of a feature shard.

    Build it with :meth:`count` on training texts, add parts with :meth:`union`; load it
    with :meth:`from_dict`. :attr:`terms` and :attr:`idf` are fixed the first time they
    are read.

    Parameters
    ----------
    column : str
        The text column.
    settings : dict
        ``ngram_range``, ``lowercase``, ``token_pattern``, ``min_df``, ``max_df``,
        ``max_features``, ``tfidf``, ``sublinear_tf``
        (see :class:`gdmix.config.TextFeatureConfig`).
    """

    def __init__(self, column: str, settings: dict[str, Any]) -> None:
        self.column = column
        self.settings = {k: settings[k] for k in _SETTINGS}
        self.settings["ngram_range"] = [int(v) for v in self.settings["ngram_range"]]
        self._pattern = re.compile(self.settings["token_pattern"])
        #: While building: training texts counted, and per term (texts holding it,
        #: occurrences).
        self.n_docs = 0
        self.doc_freq: Counter[str] | None = Counter()
        self.term_freq: Counter[str] | None = Counter()
        self._terms: list[str] | None = None
        self._idf: np.ndarray | None = None
        self._lookup: dict[str, int] | None = None

    # -- building -------------------------------------------------------------------
    def analyze(self, text: str) -> list[str]:
        """The terms of ``text`` (see :func:`analyze`)."""
        s = self.settings
        return analyze(text, self._pattern, s["lowercase"], s["ngram_range"])

    @classmethod
    def count(cls, column: str, texts: list[str], settings: dict[str, Any]) -> TextVocabulary:
        """Count the terms of training ``texts`` (not yet pruned: see :attr:`terms`)."""
        vocab = cls(column, settings)
        df, tf = vocab.doc_freq, vocab.term_freq
        assert df is not None and tf is not None
        for text in texts:
            terms = vocab.analyze(text)
            tf.update(terms)
            df.update(set(terms))
        vocab.n_docs = len(texts)
        return vocab

    def union(self, other: TextVocabulary) -> TextVocabulary:
        """The counts of both parts of the training data.

        Raises
        ------
        ValueError
            When either is a saved (finished) vocabulary, or their settings differ.
        """
        if self.doc_freq is None or other.doc_freq is None:
            raise ValueError(f"text column '{self.column}': a finished vocabulary takes no parts")
        if self.settings != other.settings:
            raise ValueError(f"text column '{self.column}': parts with different settings")
        out = TextVocabulary(self.column, self.settings)
        out.n_docs = self.n_docs + other.n_docs
        out.doc_freq = self.doc_freq + other.doc_freq
        assert self.term_freq is not None and other.term_freq is not None
        out.term_freq = self.term_freq + other.term_freq
        return out

    def _finish(self) -> None:
        """Prune the counted terms into the vocabulary and compute the idf."""
        if self._terms is not None:
            return
        assert self.doc_freq is not None and self.term_freq is not None
        s, n = self.settings, self.n_docs
        terms = sorted(self.doc_freq)
        dfs = np.array([self.doc_freq[t] for t in terms], dtype=np.int64)
        low = s["min_df"] if isinstance(s["min_df"], int) else s["min_df"] * n
        high = s["max_df"] if isinstance(s["max_df"], int) else s["max_df"] * n
        if high < low:
            raise DataError(
                f"text column '{self.column}': max_df ({s['max_df']}) keeps fewer texts than "
                f"min_df ({s['min_df']}) over {n} training texts"
            )
        keep = np.flatnonzero((dfs >= low) & (dfs <= high))
        limit = s["max_features"]
        if limit is not None and len(keep) > limit:
            tfs = np.array([self.term_freq[terms[j]] for j in keep], dtype=np.int64)
            order = np.lexsort((keep, -tfs))  # most occurrences first, then alphabetical
            keep = np.sort(keep[order[:limit]])
        if n and not len(keep):
            raise DataError(
                f"text column '{self.column}': no term of the {n} training texts is left "
                f"(min_df {s['min_df']}, max_df {s['max_df']}); lower min_df or check the column"
            )
        self._terms = [terms[j] for j in keep]
        df = dfs[keep].astype(np.float64)
        tfidf = s["tfidf"]
        self._idf = np.log((1.0 + n) / (1.0 + df)) + 1.0 if tfidf else np.ones(len(keep))
        self.doc_freq = self.term_freq = None  # the totals are not needed any more

    @property
    def terms(self) -> list[str]:
        """The vocabulary, in column order (alphabetical)."""
        self._finish()
        assert self._terms is not None
        return self._terms

    @property
    def idf(self) -> np.ndarray:
        """Inverse document frequency of every term (ones without ``tfidf``)."""
        self._finish()
        assert self._idf is not None
        return self._idf

    def __len__(self) -> int:
        return len(self.terms)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TextVocabulary):
            return NotImplemented
        return (
            self.column == other.column
            and self.settings == other.settings
            and self.terms == other.terms
            and np.array_equal(self.idf, other.idf)
        )

    __hash__ = None  # type: ignore[assignment]

    # -- encoding -------------------------------------------------------------------
    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """CSR rows (float64, sorted indices) of ``texts`` over the vocabulary; terms not
        in it are ignored."""
        if self._lookup is None:
            self._lookup = {t: j for j, t in enumerate(self.terms)}
        get = self._lookup.get
        n, d = len(texts), len(self.terms)
        indptr = np.zeros(n + 1, dtype=np.int64)
        cols: list[int] = []
        vals: list[int] = []
        for i, text in enumerate(texts):
            found = Counter(j for j in map(get, self.analyze(text)) if j is not None)
            for j in sorted(found):
                cols.append(j)
                vals.append(found[j])
            indptr[i + 1] = len(cols)
        data = np.array(vals, dtype=np.float64)
        indices = np.array(cols, dtype=np.int32 if d < 2**31 else np.int64)
        if self.settings["tfidf"]:
            if self.settings["sublinear_tf"]:
                np.log(data, out=data)
                data += 1.0
            data *= self.idf[indices]
            rows = np.repeat(np.arange(n), np.diff(indptr))
            norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=n))
            data /= norms[rows]
        mat = sp.csr_matrix((data, indices, indptr), shape=(n, d))
        mat.has_sorted_indices = True
        return mat

    # -- persistence ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: settings, terms and idf (saved in ``features.json``)."""
        out = {"column": self.column, **self.settings, "terms": list(self.terms)}
        if self.settings["tfidf"]:
            out["idf"] = self.idf.tolist()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TextVocabulary:
        """Inverse of :meth:`to_dict` (a finished vocabulary)."""
        vocab = cls(str(raw["column"]), raw)
        vocab.doc_freq = vocab.term_freq = None
        vocab._terms = [str(t) for t in raw["terms"]]
        idf = raw.get("idf")
        vocab._idf = (
            np.asarray(idf, dtype=np.float64) if idf is not None else np.ones(len(vocab._terms))
        )
        if len(vocab._idf) != len(vocab._terms):
            raise ValueError(f"text column '{vocab.column}': {len(vocab._idf)} idf values for "
                             f"{len(vocab._terms)} terms")  # fmt: skip
        return vocab

"""Evaluation metrics for binary classifiers: ROC AUC, log loss and per-entity AUC.

Every metric is exact and costs one sort of the scores, O(n log n), whatever the number
of groups; ties between scores count one half (the trapezoid rule, or Mann-Whitney with
midranks). The AUC splits the rows by class, sorts each class's scores (numpy's SIMD
sort when the weights are equal, an argsort otherwise) and counts the pairs in one
compiled merge; unweighted counts are exact integers. :class:`BinaryEvaluator` keeps the
class split of a table whose labels and weights do not change (a training table
evaluated after every coordinate update), so each evaluation sorts the scores only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numba
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from gdmix.errors import DataError
from gdmix.vector_math import FMA_ONLY, exp_neg_abs, log1p_unit

__all__ = ["BinaryEvaluator", "evaluate", "grouped_auc", "log_loss", "roc_auc"]

_EPS = 1e-15


@numba.njit(cache=True)
def _first_not_binary(y):  # type: ignore[no-untyped-def]
    for i in range(y.shape[0]):
        if y[i] != 0.0 and y[i] != 1.0:
            return i
    return -1


@numba.njit(cache=True)
def _first_not_finite(a):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        if not np.isfinite(a[i]):
            return i
    return -1


def _labels(y_true: ArrayLike) -> NDArray[np.float64]:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise DataError(f"y_true must be one-dimensional, got shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise DataError(f"y_true must hold the numbers 0 and 1, got dtype {y.dtype}")
    y = y.astype(np.float64, copy=False)
    bad = _first_not_binary(y) if len(y) else -1
    if bad >= 0:
        raise DataError(f"y_true must hold only 0 and 1, found {y[bad]!r}")
    return y


def _vector(x: ArrayLike, name: str, n: int) -> NDArray[np.float64]:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric: {exc}") from exc
    if a.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.shape[0] != n:
        raise DataError(f"{name} has {a.shape[0]} rows but y_true has {n}")
    if n and _first_not_finite(a) >= 0:
        raise DataError(f"{name} contains NaN or infinite values")
    return a


def _weights(sample_weight: ArrayLike | None, n: int) -> NDArray[np.float64]:
    if sample_weight is None:
        return np.ones(n)
    w = _vector(sample_weight, "sample_weight", n)
    if (w < 0).any():
        raise DataError("sample_weight must be non-negative")
    return w


@numba.njit(cache=True)
def _pair_count(pos: np.ndarray, neg: np.ndarray) -> int:
    """Twice the Mann-Whitney count: sum over positives of 2 #(neg < p) + #(neg == p).

    ``pos`` and ``neg`` are sorted ascending. Exact in int64 up to ~4.6e18 pairs.
    """
    total = 0
    j = 0
    nn = neg.shape[0]
    i = 0
    npos = pos.shape[0]
    while i < npos:
        v = pos[i]
        i2 = i + 1
        while i2 < npos and pos[i2] == v:
            i2 += 1
        while j < nn and neg[j] < v:
            j += 1
        k = j
        while k < nn and neg[k] == v:
            k += 1
        total += (i2 - i) * (2 * j + (k - j))
        i = i2
    return total


@numba.njit(cache=True)
def _pair_weight(pos: np.ndarray, pos_w: np.ndarray, neg: np.ndarray, neg_w: np.ndarray) -> float:
    """Weighted Mann-Whitney sum: sum over positives of w_p (W(neg < p) + W(neg == p) / 2).

    Scores sorted ascending, weights aligned with them.
    """
    total = 0.0
    below = 0.0
    j = 0
    nn = neg.shape[0]
    i = 0
    npos = pos.shape[0]
    while i < npos:
        v = pos[i]
        wp = 0.0
        while i < npos and pos[i] == v:
            wp += pos_w[i]
            i += 1
        while j < nn and neg[j] < v:
            below += neg_w[j]
            j += 1
        tie = 0.0
        k = j
        while k < nn and neg[k] == v:
            tie += neg_w[k]
            k += 1
        total += wp * (below + 0.5 * tie)
    return total


#: The logistic loss sum works in blocks of this many rows (exp and log1p vectorised
#: over a block) and chunks of at most 64 blocks' worth per thread task.
_LOSS_BLOCK = 512
_LOSS_CHUNKS = 64


@numba.njit(cache=True, parallel=True, fastmath=FMA_ONLY)
def _logit_loss_sum(y: np.ndarray, z: np.ndarray, w: np.ndarray, weighted: bool) -> float:
    """``sum w * (log1p(exp(-|z|)) + max(z, 0) - y z)`` (``w`` ignored when not weighted).

    On every core, in chunks fixed by the number of rows whose sums are added in order
    (the same result on any number of threads); ``exp`` and ``log1p`` are the
    vectorised polynomials of :mod:`gdmix.vector_math` (2x faster than libm calls).
    """
    n = z.shape[0]
    n_chunks = min(_LOSS_CHUNKS, max(1, n // _LOSS_BLOCK))
    part = np.zeros(n_chunks)
    for c in numba.prange(n_chunks):
        ez = np.empty(_LOSS_BLOCK)
        bits = np.empty(_LOSS_BLOCK, dtype=np.int64)
        stop = n * (c + 1) // n_chunks
        acc = 0.0
        for lo in range(n * c // n_chunks, stop, _LOSS_BLOCK):
            m = min(_LOSS_BLOCK, stop - lo)
            exp_neg_abs(z[lo : lo + m], ez[:m], bits[:m])
            log1p_unit(ez[:m], ez[:m])
            for k in range(m):
                v = z[lo + k]
                tail = ez[k] if abs(v) <= 700.0 else 0.0  # exp_neg_abs stops at exp(-700)
                loss = tail + max(v, 0.0) - y[lo + k] * v
                acc += w[lo + k] * loss if weighted else loss
        part[c] = acc
    total = 0.0
    for c in range(n_chunks):
        total += part[c]
    return total


def _sorted_class(scores: NDArray[np.float64], weights: NDArray[np.float64] | None) -> tuple:
    """``scores`` (a fresh array) sorted in place, with their weights aligned."""
    if weights is None:
        scores.sort()
        return scores, None
    order = np.argsort(scores)
    return scores[order], weights[order]


class BinaryEvaluator:
    """AUC and log loss of many score vectors over one table's fixed labels and weights.

    The labels are checked and split by class once; every :meth:`auc` then sorts the
    scores of each class (one sort's worth of work) and merges them in compiled code.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Binary labels, 0 or 1.
    sample_weight : array_like of shape (n,), optional
        Non-negative weight of each row; all ones by default. Equal weights are
        recognised and take the unweighted path (the AUC does not change with a common
        scale).

    Raises
    ------
    DataError
        If the labels are not 0/1 or the weights are negative, not finite or of the
        wrong length.
    """

    def __init__(self, y_true: ArrayLike, sample_weight: ArrayLike | None = None) -> None:
        y = _labels(y_true)
        n = y.shape[0]
        self.n_rows = n
        self._y = y
        self._positive = y == 1.0
        self._n_pos = int(np.count_nonzero(self._positive))
        w = None if sample_weight is None else _weights(sample_weight, n)
        self._uniform = w is None or bool(n == 0 or (w == w[0]).all())
        if w is None:
            self._w = np.ones(1)  # unused
            self._w_total = float(n)
            self._pos_total, self._neg_total = float(self._n_pos), float(n - self._n_pos)
            self._class_weights = None
            return
        self._w = w
        self._w_total = float(w.sum())
        pos_w, neg_w = w[self._positive], w[~self._positive]
        self._pos_total, self._neg_total = float(pos_w.sum()), float(neg_w.sum())
        self._class_weights = None if self._uniform else (pos_w, neg_w)

    def _scores(self, y_score: ArrayLike, name: str) -> NDArray[np.float64]:
        return _vector(y_score, name, self.n_rows)

    def auc(self, y_score: ArrayLike) -> float:
        """Area under the ROC curve of ``y_score`` (ties count one half).

        Raises
        ------
        DataError
            If either class has no weight, or the scores are not finite.
        """
        s = self._scores(y_score, "y_score")
        if self._pos_total <= 0 or self._neg_total <= 0:
            raise DataError("roc_auc needs both classes in y_true (with positive weight)")
        pos_s = s[self._positive]
        neg_s = s[~self._positive]
        if self._class_weights is None:
            n_pos, n_neg = self._n_pos, self.n_rows - self._n_pos
            twice = _pair_count(_sorted_class(pos_s, None)[0], _sorted_class(neg_s, None)[0])
            return float(twice / (2.0 * n_pos * n_neg))
        pos_w, neg_w = self._class_weights
        ps, pw = _sorted_class(pos_s, pos_w)
        ns, nw = _sorted_class(neg_s, neg_w)
        return float(_pair_weight(ps, pw, ns, nw) / (self._pos_total * self._neg_total))

    def log_loss(self, logits: ArrayLike) -> float:
        """Mean (weighted) binary cross-entropy of ``logits``.

        Raises
        ------
        DataError
            If the weights sum to zero or the logits are not finite.
        """
        z = self._scores(logits, "y_prob_or_logit")
        if self._w_total <= 0:
            raise DataError("log_loss needs at least one row with positive weight")
        total = _logit_loss_sum(self._y, z, self._w, not self._uniform)
        if self._uniform:
            return float(total / self.n_rows)
        return float(total / self._w_total)


def roc_auc(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Area under the ROC curve, computed exactly in O(n log n).

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Binary labels, 0 or 1.
    y_score : array_like of shape (n,)
        Scores (probabilities, logits or any monotone transform of them).
    sample_weight : array_like of shape (n,), optional
        Non-negative weight of each row; all ones by default.

    Returns
    -------
    float
        The probability that a random positive outscores a random negative, ties
        counting one half (weighted by ``sample_weight``).

    Raises
    ------
    DataError
        If the lengths differ, the labels are not 0/1, or either class has no weight.
    """
    return BinaryEvaluator(y_true, sample_weight).auc(y_score)


def log_loss(
    y_true: ArrayLike,
    y_prob_or_logit: ArrayLike,
    sample_weight: ArrayLike | None = None,
    *,
    from_logits: bool = False,
) -> float:
    """Mean (weighted) binary cross-entropy.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Binary labels, 0 or 1.
    y_prob_or_logit : array_like of shape (n,)
        Predicted probabilities of class 1, or logits when ``from_logits`` is true.
    sample_weight : array_like of shape (n,), optional
        Non-negative weight of each row; all ones by default.
    from_logits : bool, default False
        Read the predictions as logits and compute the loss stably as
        ``log1p(exp(-|z|)) + max(z, 0) - y * z``. Otherwise probabilities are
        clipped to ``[1e-15, 1 - 1e-15]``.

    Returns
    -------
    float
        ``sum(w * loss) / sum(w)``.

    Raises
    ------
    DataError
        If the lengths differ, the labels are not 0/1, or the weights sum to zero.
    """
    y = _labels(y_true)
    p = _vector(y_prob_or_logit, "y_prob_or_logit", y.shape[0])
    if from_logits:
        return BinaryEvaluator(y, sample_weight).log_loss(p)
    w = _weights(sample_weight, y.shape[0])
    w_tot = w.sum()
    if w_tot <= 0:
        raise DataError("log_loss needs at least one row with positive weight")
    if ((p < 0) | (p > 1)).any():
        raise DataError("probabilities must lie in [0, 1]; pass from_logits=True for logits")
    p = np.clip(p, _EPS, 1.0 - _EPS)
    loss = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return float(np.dot(w, loss) / w_tot)


@numba.njit(cache=True)
def _grouped_sums(
    order: np.ndarray, starts: np.ndarray, s: np.ndarray, y: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: Mann-Whitney numerator, positive weight, negative weight.

    ``order[starts[g]:starts[g + 1]]`` are group ``g``'s rows; each group's scores are
    sorted on their own (small sorts, no global one).
    """
    n_groups = starts.shape[0] - 1
    num = np.zeros(n_groups)
    p_tot = np.zeros(n_groups)
    n_tot = np.zeros(n_groups)
    for g in range(n_groups):
        a, b = starts[g], starts[g + 1]
        rows = order[a:b]
        sg = np.empty(b - a)
        for t in range(b - a):
            sg[t] = s[rows[t]]
        idx = np.argsort(sg)
        below = 0.0
        acc = 0.0
        t = 0
        while t < b - a:
            v = sg[idx[t]]
            pw = 0.0
            nw = 0.0
            while t < b - a and sg[idx[t]] == v:
                r = rows[idx[t]]
                if y[r] == 1.0:
                    pw += w[r]
                else:
                    nw += w[r]
                t += 1
            acc += pw * (below + 0.5 * nw)
            below += nw
            p_tot[g] += pw
        num[g] = acc
        n_tot[g] = below
    return num, p_tot, n_tot


def grouped_auc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    groups: ArrayLike,
    sample_weight: ArrayLike | None = None,
    *,
    weighting: Literal["rows", "uniform"] = "rows",
) -> float:
    """Per-entity ROC AUC, averaged over the groups that hold both classes.

    Rows are grouped by a hash of the group ids and a counting sort; each group's
    scores are then sorted on their own in compiled code, so millions of groups cost
    less than one sort of the whole table.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Binary labels, 0 or 1.
    y_score : array_like of shape (n,)
        Scores; only their order within a group matters.
    groups : array_like of shape (n,)
        Entity id of each row (any hashable dtype).
    sample_weight : array_like of shape (n,), optional
        Non-negative weight of each row; all ones by default.
    weighting : {"rows", "uniform"}, default "rows"
        ``"rows"`` weights each group's AUC by its number of rows (its total weight
        when ``sample_weight`` is given); ``"uniform"`` weights groups equally.

    Returns
    -------
    float
        The weighted mean of the groups' AUCs, or nan if no group has both classes
        (with positive weight).

    Raises
    ------
    DataError
        If the lengths differ or the labels are not 0/1 (a ``ValueError`` for a bad
        ``weighting``).
    """
    from gdmix.data.layout import counting_sort

    if weighting not in ("rows", "uniform"):
        raise ValueError(f"weighting must be 'rows' or 'uniform', got {weighting!r}")
    y = _labels(y_true)
    n = y.shape[0]
    s = _vector(y_score, "y_score", n)
    w = _weights(sample_weight, n)
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise DataError(f"groups must be one-dimensional with {n} rows, got shape {g.shape}")
    if n == 0:
        return float("nan")
    codes, uniques = pd.factorize(g, use_na_sentinel=False)
    order, starts = counting_sort(codes.astype(np.int64), len(uniques))
    num, p_grp, n_grp = _grouped_sums(order, starts, s, y, w)
    valid = (p_grp > 0) & (n_grp > 0)
    if not valid.any():
        return float("nan")
    auc = num[valid] / (p_grp[valid] * n_grp[valid])
    if weighting == "uniform":
        return float(auc.mean())
    size = (p_grp + n_grp)[valid]
    return float(np.dot(size, auc) / size.sum())


def evaluate(
    y_true: ArrayLike,
    logits: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    groups: Mapping[str, ArrayLike] | None = None,
) -> dict[str, float]:
    """Compute the standard evaluation metrics of a binary model from its logits.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Binary labels, 0 or 1.
    logits : array_like of shape (n,)
        Predicted logits (log-odds of class 1).
    sample_weight : array_like of shape (n,), optional
        Non-negative weight of each row; all ones by default.
    groups : mapping of str to array_like of shape (n,), optional
        Entity ids per random-effect name; each adds a key ``"auc@<name>"`` holding
        :func:`grouped_auc` with ``weighting="rows"``.

    Returns
    -------
    dict of str to float
        ``{"auc": ..., "log_loss": ..., "n_rows": ...}`` plus ``"auc@<name>"`` keys.
    """
    y = _labels(y_true)
    rows = BinaryEvaluator(y, sample_weight)
    out = {"auc": rows.auc(logits), "log_loss": rows.log_loss(logits), "n_rows": float(y.shape[0])}
    for name, ids in (groups or {}).items():
        out[f"auc@{name}"] = grouped_auc(y, logits, ids, sample_weight)
    return out

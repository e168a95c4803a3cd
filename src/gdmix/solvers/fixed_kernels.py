"""Compiled, multi-threaded sums for the linear fixed effect over a whole table.

Everything the fixed-effect optimiser needs from the data is a handful of sums over the
rows, for the margins ``z_i = x_i . w + b + o_i``, the row weights ``s_i`` and the
logistic loss ``l(y, z) = log(1 + exp(z)) - y z``:

- :func:`value_grad`: ``sum s_i l_i``, ``X^T (s g)`` and ``sum s_i g_i`` with
  ``g = sigmoid(z) - y``, plus the curvature ``d_i = s_i sigmoid(z_i) (1 - sigmoid(z_i))``
  of every row, kept for the products below;
- :func:`hess_vec`: ``X^T (d * (X v + c))`` and ``sum d * (X v + c)``, the loss's
  Hessian applied to a direction ``(v, c)``;
- :func:`hessian`: ``X^T D X``, ``X^T d`` and ``sum d`` (a small number of columns only);
- :func:`column_moments`: ``sum s``, ``X^T s`` and ``(X * X)^T s``.

All run in parallel threads (numba ``prange``). A :class:`Design` holds the matrix and
what the kernels need next to it:

- **CSR**: the rows give the margins. Sums over rows (``X^T u``) of a wide design (at
  least :data:`TRANSPOSE_MIN_FEATURES` columns: text, ids) are read from a CSR copy of
  ``X^T`` (built once per design, one extra copy of the block), so every output entry is
  a dot product computed by one thread: no per-thread accumulators, which a wide design
  could not afford, and no write conflicts; work is split into chunks of equal numbers
  of non-zeros. A narrower design adds its rows into per-chunk accumulators of ``p``
  floats, which stay in cache, and needs no copy.
- **dense** (float64 or float32, C or Fortran order): one pass per sum, row by row (C) or
  column by column over cache-sized blocks of rows (Fortran), each chunk of rows with its
  own accumulator of ``p`` floats.

Scalar sums (the loss, ``sum g``) are added per chunk of rows, and the chunks depend only
on the data, never on the number of threads: the sums, and the solutions built on them,
are the same whatever ``training.n_threads`` is. Small designs (see
:data:`PARALLEL_MIN_WORK`) run on one thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from gdmix.losses import pointwise

__all__ = [
    "Design",
    "column_moments",
    "hess_vec",
    "hessian",
    "hessian_work",
    "prepare",
    "value_grad",
    "value_grad_hessian",
]

#: Rows per block when walking a dense design column by column (Fortran order).
_BLOCK = 256
#: Upper bound on ``chunks * columns`` of the per-chunk accumulators (floats).
_ACC_BUDGET = 1 << 24
#: Fixed number of row chunks of a CSR design (fewer for small designs).
_ROW_CHUNKS = 64
#: CSR designs with at least this many columns keep a CSR copy of their transpose for
#: the column sums; narrower ones add rows into per-chunk accumulators (in cache).
TRANSPOSE_MIN_FEATURES = 4096
#: Designs with less work per pass than this (non-zeros plus 20 per row, for the loss's
#: exp and log) are summed on one thread: a parallel region would cost more than it
#: saves, and far more on a machine whose cores are busy with other work.
PARALLEL_MIN_WORK = 4_000_000


def _as_matrix(X: Any) -> sp.csr_matrix | np.ndarray:
    if sp.issparse(X):
        X = X.tocsr() if X.format != "csr" else X
        if X.dtype not in (np.float64, np.float32):
            X = X.astype(np.float64)
        if not X.has_sorted_indices:
            X = X.sorted_indices()
        return X
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"a design must be 2-dimensional. Got {X.ndim} dimensions instead")
    if X.dtype not in (np.float64, np.float32):
        X = X.astype(np.float64)
    if not (X.flags.c_contiguous or X.flags.f_contiguous):
        X = np.ascontiguousarray(X)
    return X


def _balanced(indptr: np.ndarray, k: int) -> np.ndarray:
    """Boundaries of ``k`` runs of rows with about equal numbers of non-zeros."""
    targets = np.linspace(0, indptr[-1], k + 1)
    bounds = np.searchsorted(indptr, targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, len(indptr) - 1
    return np.maximum.accumulate(bounds)


class Design:
    """A design ready for the compiled sums.

    Parameters
    ----------
    X : ndarray or sparse matrix, shape (n, p)
        CSR (float64 or float32 values, any index type) and dense float64/float32 arrays
        are used without a copy; other sparse formats become CSR, other dtypes float64.
    transpose : CSR matrix, optional
        ``X^T`` in CSR form, when already built (by an earlier :class:`Design` of ``X``).

    Attributes
    ----------
    X : CSR matrix or ndarray
        The design.
    Xt : CSR matrix or None
        ``X^T`` in CSR form: sparse designs of at least :data:`TRANSPOSE_MIN_FEATURES`
        columns only.
    """

    def __init__(self, X: Any, transpose: sp.csr_matrix | None = None) -> None:
        self.X = _as_matrix(X)
        self.shape: tuple[int, int] = self.X.shape
        n, p = self.shape
        self.sparse = sp.issparse(self.X)
        nnz = self.X.nnz if self.sparse else n * p
        #: Whether the sums run on several threads (see :data:`PARALLEL_MIN_WORK`).
        self.parallel = nnz + 20 * n >= PARALLEL_MIN_WORK
        self.Xt: sp.csr_matrix | None = None
        if self.sparse:
            if transpose is None and p >= TRANSPOSE_MIN_FEATURES:
                transpose = sp.csr_matrix(self.X.T)
                transpose.sort_indices()
            self.Xt = transpose
            k = max(1, min(_ROW_CHUNKS, n // 2048))
            self.row_bounds = _balanced(self.X.indptr, k)
        else:
            by_rows = n // 8192
            by_memory = _ACC_BUDGET // max(p, 1)
            k = int(max(1, min(32, by_rows, by_memory)))
            self.row_bounds = np.linspace(0, n, k + 1).round().astype(np.int64)

    @property
    def n_features(self) -> int:
        """Number of columns."""
        return self.shape[1]

    def col_bounds(self) -> np.ndarray:
        """Chunks of columns with equal non-zeros, a few per thread (CSR only)."""
        assert self.Xt is not None
        k = min(self.shape[1], 4 * numba.get_num_threads()) or 1
        return _balanced(self.Xt.indptr, k)


def prepare(X: Any) -> Design:
    """``X`` as a :class:`Design` (returned as it is when it already is one)."""
    return X if isinstance(X, Design) else Design(X)


_F = TypeVar("_F", bound=Callable[..., Any])


def _threaded(fn: _F) -> _F:
    """Run ``fn(design, ...)`` on the caller's threads, or on one for a small design."""

    @functools.wraps(fn)
    def run(X: Any, *args: Any, **kwargs: Any) -> Any:
        D = prepare(X)
        previous = numba.get_num_threads()
        if D.parallel or previous == 1:
            return fn(D, *args, **kwargs)
        numba.set_num_threads(1)
        try:
            return fn(D, *args, **kwargs)
        finally:
            numba.set_num_threads(previous)

    return run  # type: ignore[return-value]


#: Reassociation lets the compiler vectorise the row dot products; no approximations of
#: functions and no assumptions about NaN or infinity.
_FAST = {"reassoc", "contract", "nsz", "arcp"}


# -- the pointwise loss ----------------------------------------------------------------


# The loss of each task is :func:`gdmix.losses.pointwise`: its integer code is the last
# argument of the kernels that evaluate it.


# -- CSR kernels: rows of X for the margins, rows of X^T (columns) for the sums -------
#
# Indices are read as unsigned integers: numba then skips its negative-index wraparound
# test on every access, which (with reassociation) lets the dot products vectorise.

_U = numba.uint64


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _csr_rows_loss(indptr, indices, data, y, s, o, w, b, bounds, sums, g, d, task):
    """Margins, loss and derivatives row by row; the loss sums per chunk."""
    for c in prange(len(bounds) - 1):
        loss = 0.0
        gsum = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            z = b + o[i]
            for k in range(_U(indptr[i]), _U(indptr[i + 1])):
                z += data[k] * w[_U(indices[k])]
            li, gi, hi = pointwise(task, y[i], z)
            si = s[i]
            loss += si * li
            gi *= si
            gsum += gi
            g[i] = gi
            d[i] = si * hi
        sums[c, 0] = loss
        sums[c, 1] = gsum


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _csr_rows_dot(indptr, indices, data, d, v, vb, bounds, sums, t):
    """``t_i = d_i (x_i . v + vb)`` row by row; its sum per chunk."""
    for c in prange(len(bounds) - 1):
        total = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            u = vb
            for k in range(_U(indptr[i]), _U(indptr[i + 1])):
                u += data[k] * v[_U(indices[k])]
            u *= d[i]
            total += u
            t[i] = u
        sums[c, 0] = total


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _csr_cols(indptr, indices, data, u, bounds, out):
    """``out_j = sum_i x_ij u_i`` over the rows of ``X^T``: each entry by one thread."""
    for c in prange(len(bounds) - 1):
        for j in range(bounds[c], bounds[c + 1]):
            acc = 0.0
            for k in range(_U(indptr[j]), _U(indptr[j + 1])):
                acc += data[k] * u[_U(indices[k])]
            out[j] = acc


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _csr_cols2(indptr, indices, data, u, bounds, out, out2):
    """``sum_i x_ij u_i`` and ``sum_i x_ij^2 u_i`` over the rows of ``X^T``."""
    for c in prange(len(bounds) - 1):
        for j in range(bounds[c], bounds[c + 1]):
            acc = 0.0
            acc2 = 0.0
            for k in range(_U(indptr[j]), _U(indptr[j + 1])):
                x = data[k] * u[_U(indices[k])]
                acc += x
                acc2 += x * data[k]
            out[j] = acc
            out2[j] = acc2


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _csr_scatter(indptr, indices, data, u, bounds, acc):
    """``acc[c, j] += x_ij u_i`` over the rows of chunk ``c`` (narrow designs)."""
    for c in prange(len(bounds) - 1):
        a = acc[c]
        for i in range(bounds[c], bounds[c + 1]):
            ui = u[i]
            for k in range(_U(indptr[i]), _U(indptr[i + 1])):
                a[_U(indices[k])] += data[k] * ui


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _csr_scatter2(indptr, indices, data, u, bounds, acc, acc2):
    """``acc[c, j] += x_ij u_i`` and ``acc2[c, j] += x_ij^2 u_i`` (narrow designs)."""
    for c in prange(len(bounds) - 1):
        a = acc[c]
        a2 = acc2[c]
        for i in range(bounds[c], bounds[c + 1]):
            ui = u[i]
            for k in range(_U(indptr[i]), _U(indptr[i + 1])):
                x = data[k] * ui
                a[_U(indices[k])] += x
                a2[_U(indices[k])] += x * data[k]


def _column_sums(D: Design, u: np.ndarray) -> np.ndarray:
    """``X^T u`` of a CSR design: from the transpose, or by chunk accumulators."""
    M, Mt = D.X, D.Xt
    if Mt is not None:
        out = np.empty(D.shape[1])
        _csr_cols(Mt.indptr, Mt.indices, Mt.data, u, D.col_bounds(), out)
        return out
    acc = _acc(len(D.row_bounds) - 1, D.shape[1])
    _csr_scatter(M.indptr, M.indices, M.data, u, D.row_bounds, acc)
    return acc.sum(axis=0)


def _column_sums2(D: Design, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X^T u`` and ``(X * X)^T u`` of a CSR design."""
    M, Mt = D.X, D.Xt
    p = D.shape[1]
    if Mt is not None:
        out, out2 = np.empty(p), np.empty(p)
        _csr_cols2(Mt.indptr, Mt.indices, Mt.data, u, D.col_bounds(), out, out2)
        return out, out2
    acc, acc2 = _acc(len(D.row_bounds) - 1, p), _acc(len(D.row_bounds) - 1, p)
    _csr_scatter2(M.indptr, M.indices, M.data, u, D.row_bounds, acc, acc2)
    return acc.sum(axis=0), acc2.sum(axis=0)


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _csr_hessian(indptr, indices, data, d, bounds, acc, accv):
    for c in prange(len(bounds) - 1):
        a = acc[c]
        av = accv[c]
        for i in range(bounds[c], bounds[c + 1]):
            di = d[i]
            for k in range(_U(indptr[i]), _U(indptr[i + 1])):
                xk = data[k] * di
                jk = _U(indices[k])
                av[jk] += xk
                for m in range(_U(indptr[i]), _U(indptr[i + 1])):
                    a[jk, _U(indices[m])] += xk * data[m]


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _csr_rows_newton(indptr, indices, data, y, s, o, w, b, bounds, sums, d, accg, acch, accd, task):
    """Loss, ``X^T (s g)``, ``X^T D X`` and ``X^T d`` in one pass (narrow designs)."""
    for c in prange(len(bounds) - 1):
        ag = accg[c]
        ah = acch[c]
        ad = accd[c]
        loss = 0.0
        gsum = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            k0 = _U(indptr[i])
            k1 = _U(indptr[i + 1])
            z = b + o[i]
            for k in range(k0, k1):
                z += data[k] * w[_U(indices[k])]
            li, gi, hi = pointwise(task, y[i], z)
            si = s[i]
            loss += si * li
            gi *= si
            gsum += gi
            di = si * hi
            d[i] = di
            for k in range(k0, k1):
                jk = _U(indices[k])
                xk = data[k]
                ag[jk] += xk * gi
                xd = xk * di
                ad[jk] += xd
                row = ah[jk]
                for m in range(k0, k1):
                    row[_U(indices[m])] += xd * data[m]
        sums[c, 0] = loss
        sums[c, 1] = gsum


# -- dense kernels ---------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _rows_value_grad(X, y, s, o, w, b, bounds, acc, sums, d, diag, accd, task):
    """Row by row: for C-ordered dense designs."""
    p = X.shape[1]
    for c in prange(len(bounds) - 1):
        a = acc[c]
        ad = accd[c]
        loss = 0.0
        gsum = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            z = b + o[i]
            for j in range(p):
                z += X[i, j] * w[j]
            li, gi, hi = pointwise(task, y[i], z)
            si = s[i]
            loss += si * li
            g = si * gi
            gsum += g
            di = si * hi
            d[i] = di
            for j in range(p):
                a[j] += X[i, j] * g
            if diag:
                for j in range(p):
                    x = X[i, j] * di
                    ad[0, j] += x
                    ad[1, j] += x * X[i, j]
        sums[c, 0] = loss
        sums[c, 1] = gsum


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _rows_hess_vec(X, d, v, vb, bounds, acc, sums):
    """Row by row: for C-ordered dense designs."""
    p = X.shape[1]
    for c in prange(len(bounds) - 1):
        a = acc[c]
        total = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            t = vb
            for j in range(p):
                t += X[i, j] * v[j]
            t *= d[i]
            total += t
            for j in range(p):
                a[j] += X[i, j] * t
        sums[c, 0] = total


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _dense_value_grad(X, y, s, o, w, b, bounds, acc, sums, d, diag, accd, task):
    """Column by column over blocks of rows: for Fortran-ordered dense designs."""
    p = X.shape[1]
    for c in prange(len(bounds) - 1):
        a = acc[c]
        ad = accd[c]
        z = np.empty(_BLOCK)
        loss = 0.0
        gsum = 0.0
        for r0 in range(bounds[c], bounds[c + 1], _BLOCK):
            r1 = min(r0 + _BLOCK, bounds[c + 1])
            m = r1 - r0
            for i in range(m):
                z[i] = b + o[r0 + i]
            for j in range(p):
                wj = w[j]
                for i in range(m):
                    z[i] += X[r0 + i, j] * wj
            for i in range(m):
                li, gi, hi = pointwise(task, y[r0 + i], z[i])
                si = s[r0 + i]
                loss += si * li
                g = si * gi
                gsum += g
                d[r0 + i] = si * hi
                z[i] = g
            for j in range(p):
                t = 0.0
                for i in range(m):
                    t += X[r0 + i, j] * z[i]
                a[j] += t
            if diag:
                for j in range(p):
                    t = 0.0
                    t2 = 0.0
                    for i in range(m):
                        x = X[r0 + i, j] * d[r0 + i]
                        t += x
                        t2 += x * X[r0 + i, j]
                    ad[0, j] += t
                    ad[1, j] += t2
        sums[c, 0] = loss
        sums[c, 1] = gsum


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _dense_hess_vec(X, d, v, vb, bounds, acc, sums):
    """Column by column over blocks of rows: for Fortran-ordered dense designs."""
    p = X.shape[1]
    for c in prange(len(bounds) - 1):
        a = acc[c]
        t = np.empty(_BLOCK)
        total = 0.0
        for r0 in range(bounds[c], bounds[c + 1], _BLOCK):
            r1 = min(r0 + _BLOCK, bounds[c + 1])
            m = r1 - r0
            for i in range(m):
                t[i] = vb
            for j in range(p):
                vj = v[j]
                for i in range(m):
                    t[i] += X[r0 + i, j] * vj
            for i in range(m):
                t[i] *= d[r0 + i]
                total += t[i]
            for j in range(p):
                u = 0.0
                for i in range(m):
                    u += X[r0 + i, j] * t[i]
                a[j] += u
        sums[c, 0] = total


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _dense_hessian(X, d, bounds, acc, accv):
    """Upper triangle of ``X^T D X``, four rows at a time (any memory order)."""
    p = X.shape[1]
    for c in prange(len(bounds) - 1):
        a = acc[c]
        av = accv[c]
        x0 = np.empty(p)
        x1 = np.empty(p)
        x2 = np.empty(p)
        x3 = np.empty(p)
        start, end = bounds[c], bounds[c + 1]
        i = start
        while i < end:
            m = min(4, end - i)
            for j in range(p):
                x0[j] = X[i, j]
                x1[j] = X[i + 1, j] if m > 1 else 0.0
                x2[j] = X[i + 2, j] if m > 2 else 0.0
                x3[j] = X[i + 3, j] if m > 3 else 0.0
            d0 = d[i]
            d1 = d[i + 1] if m > 1 else 0.0
            d2 = d[i + 2] if m > 2 else 0.0
            d3 = d[i + 3] if m > 3 else 0.0
            for j in range(p):
                t0 = x0[j] * d0
                t1 = x1[j] * d1
                t2 = x2[j] * d2
                t3 = x3[j] * d3
                av[j] += t0 + t1 + t2 + t3
                row = a[j]
                for k in range(j, p):
                    row[k] += t0 * x0[k] + t1 * x1[k] + t2 * x2[k] + t3 * x3[k]
            i += m


@numba.njit(parallel=True, cache=True)
def _dense_moments(X, s, bounds, acc, acc2):
    p = X.shape[1]
    for c in prange(len(bounds) - 1):
        a = acc[c]
        a2 = acc2[c]
        for r0 in range(bounds[c], bounds[c + 1], _BLOCK):
            r1 = min(r0 + _BLOCK, bounds[c + 1])
            for j in range(p):
                t = 0.0
                t2 = 0.0
                for i in range(r0, r1):
                    x = X[i, j]
                    t += x * s[i]
                    t2 += x * x * s[i]
                a[j] += t
                a2[j] += t2


# -- public sums -----------------------------------------------------------------------


def _acc(k: int, p: int) -> np.ndarray:
    return np.zeros((k, p))


@_threaded
def value_grad(
    X: Design | Any,
    y: np.ndarray,
    s: np.ndarray,
    o: np.ndarray,
    w: np.ndarray,
    b: float,
    *,
    diag: bool = False,
    task: int = 0,
) -> tuple[float, np.ndarray, float, np.ndarray, np.ndarray | None]:
    """Loss and gradient sums at ``(w, b)``, and each row's curvature.

    Parameters
    ----------
    X : Design (or a matrix, prepared on the fly), shape (n, p)
        The design.
    y, s, o : ndarray, shape (n,)
        Labels, row weights and offsets (float64, contiguous).
    w : ndarray, shape (p,)
        Coefficients.
    b : float
        Intercept.
    diag : bool
        Also sum ``X^T d`` and ``(X * X)^T d`` (the Hessian's diagonal).
    task : int
        Code of the loss (:data:`gdmix.losses.TASK_CODES`; 0, logistic, by default).

    Returns
    -------
    loss : float
        ``sum_i s_i l(y_i, z_i)``.
    xg : ndarray, shape (p,)
        ``X^T (s * g)``.
    gsum : float
        ``sum_i s_i g_i``.
    d : ndarray, shape (n,)
        ``s_i l''(y_i, z_i)`` (logistic: ``s_i sigmoid(z_i) (1 - sigmoid(z_i))``).
    xd : ndarray, shape (2, p), or None
        ``X^T d`` and ``(X * X)^T d`` when ``diag``.
    """
    D = prepare(X)
    n, p = D.shape
    bounds = D.row_bounds
    k = len(bounds) - 1
    sums = np.zeros((k, 2))
    d = np.empty(n)
    w = np.ascontiguousarray(w, dtype=np.float64)
    xd = None
    if D.sparse:
        M = D.X
        g = np.empty(n)
        _csr_rows_loss(M.indptr, M.indices, M.data, y, s, o, w, float(b), bounds, sums, g, d, task)
        xg = _column_sums(D, g)
        if diag:
            xd = np.stack(_column_sums2(D, d))
    else:
        acc = _acc(k, p)
        accd = np.zeros((k, 2, p) if diag else (k, 2, 1))
        args = (w, float(b), bounds, acc, sums, d, diag, accd, task)
        if D.X.flags.c_contiguous:
            _rows_value_grad(D.X, y, s, o, *args)
        else:
            _dense_value_grad(D.X, y, s, o, *args)
        xg = acc.sum(axis=0)
        xd = accd.sum(axis=0) if diag else None
    return float(sums[:, 0].sum()), xg, float(sums[:, 1].sum()), d, xd


@_threaded
def value_grad_hessian(
    X: Design | Any,
    y: np.ndarray,
    s: np.ndarray,
    o: np.ndarray,
    w: np.ndarray,
    b: float,
    *,
    task: int = 0,
) -> tuple[float, np.ndarray, float, np.ndarray, tuple[np.ndarray, np.ndarray, float]]:
    """:func:`value_grad` and :func:`hessian` at ``(w, b)``, in one pass over a narrow
    CSR design (two otherwise).

    Returns ``(loss, xg, gsum, d, (X^T D X, X^T d, sum d))``.
    """
    D = prepare(X)
    if not D.sparse or D.Xt is not None:
        loss, xg, gsum, d, _ = value_grad(D, y, s, o, w, b, task=task)
        return loss, xg, gsum, d, hessian(D, d)
    n, p = D.shape
    k = max(1, min(len(D.row_bounds) - 1, 32, _ACC_BUDGET // max(p * p, 1)))
    bounds = _balanced(D.X.indptr, k)
    sums = np.zeros((k, 2))
    d = np.empty(n)
    accg, acch, accd = _acc(k, p), np.zeros((k, p, p)), _acc(k, p)
    M = D.X
    w = np.ascontiguousarray(w, dtype=np.float64)
    _csr_rows_newton(
        M.indptr,
        M.indices,
        M.data,
        y,
        s,
        o,
        w,
        float(b),
        bounds,
        sums,
        d,
        accg,
        acch,
        accd,
        task,
    )
    H = acch.sum(axis=0)
    pieces = (0.5 * (H + H.T), accd.sum(axis=0), float(d.sum()))
    return float(sums[:, 0].sum()), accg.sum(axis=0), float(sums[:, 1].sum()), d, pieces


@_threaded
def hess_vec(X: Design | Any, d: np.ndarray, v: np.ndarray, vb: float) -> tuple[np.ndarray, float]:
    """The loss's Hessian (curvatures ``d``) applied to the direction ``(v, vb)``.

    Returns ``X^T (d * (X v + vb))`` and ``sum d * (X v + vb)``.
    """
    D = prepare(X)
    n, p = D.shape
    bounds = D.row_bounds
    sums = np.zeros((len(bounds) - 1, 1))
    v = np.ascontiguousarray(v, dtype=np.float64)
    if D.sparse:
        M = D.X
        t = np.empty(n)
        _csr_rows_dot(M.indptr, M.indices, M.data, d, v, float(vb), bounds, sums, t)
        return _column_sums(D, t), float(sums.sum())
    acc = _acc(len(bounds) - 1, p)
    if D.X.flags.c_contiguous:
        _rows_hess_vec(D.X, d, v, float(vb), bounds, acc, sums)
    else:
        _dense_hess_vec(D.X, d, v, float(vb), bounds, acc, sums)
    return acc.sum(axis=0), float(sums.sum())


@_threaded
def hessian(X: Design | Any, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The loss's full Hessian pieces: ``X^T D X``, ``X^T d`` and ``sum d``.

    For designs with few columns only (``p x p`` floats per chunk of rows).
    """
    D = prepare(X)
    n, p = D.shape
    k = max(1, min(len(D.row_bounds) - 1, 32, _ACC_BUDGET // max(p * p, 1)))
    bounds = np.linspace(0, n, k + 1).round().astype(np.int64)
    acc = np.zeros((k, p, p))
    accv = np.zeros((k, p))
    if D.sparse:
        M = D.X
        _csr_hessian(M.indptr, M.indices, M.data, d, bounds, acc, accv)
        H = acc.sum(axis=0)
        return 0.5 * (H + H.T), accv.sum(axis=0), float(d.sum())
    _dense_hessian(D.X, d, bounds, acc, accv)
    H = np.triu(acc.sum(axis=0))
    return H + np.triu(H, 1).T, accv.sum(axis=0), float(d.sum())


def hessian_work(X: Design | Any) -> tuple[float, float]:
    """Work of one :func:`hessian` and of one :func:`value_grad`, in the same units.

    Measured: a CSR Hessian costs about 0.6 pass-units per pair of non-zeros in a row
    (divided by the row's non-zeros); the dense kernel about 0.25. Both numbers add up
    over row blocks, so a partitioned design sums them.
    """
    D = prepare(X)
    n, p = D.shape
    if D.sparse:
        counts = np.diff(D.X.indptr).astype(np.float64)
        return float((counts * (counts + 1.0)).sum() / 2.0), D.X.nnz / 0.6
    return n * p * (p + 1) / 2.0, 4.0 * n * p


@_threaded
def column_moments(X: Design | Any, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted column sums ``(sum s, X^T s, (X * X)^T s)``; partitions' values add up."""
    D = prepare(X)
    p = D.shape[1]
    if D.sparse:
        xs, xxs = _column_sums2(D, s)
        return float(s.sum()), xs, xxs
    bounds = D.row_bounds
    acc, acc2 = _acc(len(bounds) - 1, p), _acc(len(bounds) - 1, p)
    _dense_moments(D.X, s, bounds, acc, acc2)
    return float(s.sum()), acc.sum(axis=0), acc2.sum(axis=0)

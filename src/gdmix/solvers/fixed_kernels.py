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

Each is one pass over the design, run in parallel threads (numba ``prange``) over a fixed
number of row chunks, each chunk with its own accumulator, added up in chunk order. The
chunking depends only on the shape of the data, never on the number of threads, so the
sums (and the solutions built on them) are the same whatever ``training.n_threads`` is.

Designs are CSR matrices (any index type) or dense arrays (float64 or float32, C or
Fortran order; dense blocks are walked in cache-sized row blocks so that either order
reads memory sequentially).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

__all__ = [
    "Design",
    "as_design",
    "chunk_bounds",
    "column_moments",
    "hess_vec",
    "hessian",
    "hessian_work",
    "value_grad",
]

#: A design the kernels accept: CSR, or a dense 2-d float array.
Design = sp.csr_matrix | sp.csr_array | np.ndarray

#: Rows per block when walking a dense design column by column (Fortran order).
_BLOCK = 256
#: Upper bound on ``chunks * columns`` of the per-chunk accumulators (floats).
_ACC_BUDGET = 1 << 24


def as_design(X: Any) -> Design:
    """``X`` in a form the kernels take: CSR with sorted indices, or a dense float array.

    Other sparse formats are converted to CSR; integer or boolean dense arrays to float64.
    Dense float64/float32 arrays and CSR matrices are used as they are (no copy).
    """
    if sp.issparse(X):
        if X.format != "csr":
            X = X.tocsr()
        if X.dtype != np.float64:
            X = X.astype(np.float64)
        return X
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"a design must be 2-dimensional. Got {X.ndim} dimensions instead")
    if X.dtype not in (np.float64, np.float32):
        X = X.astype(np.float64)
    if not (X.flags.c_contiguous or X.flags.f_contiguous):
        X = np.ascontiguousarray(X)
    return X


def chunk_bounds(n_rows: int, n_cols: int, nnz: int) -> np.ndarray:
    """Row boundaries of the chunks summed in parallel: a function of the shape only.

    About one chunk per 8,192 rows, at most 32, and few enough that the accumulators
    (``chunks * n_cols`` floats) stay small next to the data and the memory budget.
    """
    by_rows = n_rows // 8192
    by_width = nnz // max(4 * n_cols, 1)
    by_memory = _ACC_BUDGET // max(n_cols, 1)
    k = int(max(1, min(32, by_rows, by_width, by_memory)))
    return np.linspace(0, n_rows, k + 1).round().astype(np.int64)


def _bounds(X: Design) -> np.ndarray:
    n, p = X.shape
    nnz = X.nnz if sp.issparse(X) else n * p
    return chunk_bounds(n, p, nnz)


# -- the pointwise loss ----------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def _pointwise(y: float, z: float) -> tuple[float, float, float]:
    """Loss, derivative and second derivative of the logistic loss at margin ``z``."""
    if z > 0.0:
        e = math.exp(-z)
        loss = z + math.log1p(e) - y * z
        sig = 1.0 / (1.0 + e)
    else:
        e = math.exp(z)
        loss = math.log1p(e) - y * z
        sig = e / (1.0 + e)
    return loss, sig - y, e / ((1.0 + e) * (1.0 + e))


# -- CSR kernels -----------------------------------------------------------------------


@numba.njit(parallel=True, cache=True)
def _csr_value_grad(indptr, indices, data, y, s, o, w, b, bounds, acc, sums, d, diag, accd):
    for c in prange(len(bounds) - 1):
        a = acc[c]
        ad = accd[c]
        loss = 0.0
        gsum = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            z = b + o[i]
            for k in range(indptr[i], indptr[i + 1]):
                z += data[k] * w[indices[k]]
            li, gi, hi = _pointwise(y[i], z)
            si = s[i]
            loss += si * li
            g = si * gi
            gsum += g
            di = si * hi
            d[i] = di
            for k in range(indptr[i], indptr[i + 1]):
                a[indices[k]] += data[k] * g
            if diag:
                for k in range(indptr[i], indptr[i + 1]):
                    x = data[k] * di
                    ad[0, indices[k]] += x
                    ad[1, indices[k]] += x * data[k]
        sums[c, 0] = loss
        sums[c, 1] = gsum


@numba.njit(parallel=True, cache=True)
def _csr_hess_vec(indptr, indices, data, d, v, vb, bounds, acc, sums):
    for c in prange(len(bounds) - 1):
        a = acc[c]
        total = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            t = vb
            for k in range(indptr[i], indptr[i + 1]):
                t += data[k] * v[indices[k]]
            t *= d[i]
            total += t
            for k in range(indptr[i], indptr[i + 1]):
                a[indices[k]] += data[k] * t
        sums[c, 0] = total


@numba.njit(parallel=True, cache=True)
def _csr_moments(indptr, indices, data, s, bounds, acc, acc2):
    for c in prange(len(bounds) - 1):
        a = acc[c]
        a2 = acc2[c]
        for i in range(bounds[c], bounds[c + 1]):
            si = s[i]
            for k in range(indptr[i], indptr[i + 1]):
                x = data[k]
                a[indices[k]] += x * si
                a2[indices[k]] += x * x * si


@numba.njit(parallel=True, cache=True)
def _csr_hessian(indptr, indices, data, d, bounds, acc, accv):
    for c in prange(len(bounds) - 1):
        a = acc[c]
        av = accv[c]
        for i in range(bounds[c], bounds[c + 1]):
            di = d[i]
            for k in range(indptr[i], indptr[i + 1]):
                xk = data[k] * di
                jk = indices[k]
                av[jk] += xk
                for m in range(indptr[i], indptr[i + 1]):
                    a[jk, indices[m]] += xk * data[m]


# -- dense kernels ---------------------------------------------------------------------


#: Reassociation lets the compiler vectorise the row dot products; no approximations of
#: functions and no assumptions about NaN or infinity.
_FAST = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _rows_value_grad(X, y, s, o, w, b, bounds, acc, sums, d, diag, accd):
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
            li, gi, hi = _pointwise(y[i], z)
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
def _dense_value_grad(X, y, s, o, w, b, bounds, acc, sums, d, diag, accd):
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
                li, gi, hi = _pointwise(y[r0 + i], z[i])
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


def value_grad(
    X: Design,
    y: np.ndarray,
    s: np.ndarray,
    o: np.ndarray,
    w: np.ndarray,
    b: float,
    *,
    diag: bool = False,
) -> tuple[float, np.ndarray, float, np.ndarray, np.ndarray | None]:
    """Loss and gradient sums at ``(w, b)``, and each row's curvature.

    Parameters
    ----------
    X : CSR matrix or dense array, shape (n, p)
        Design, as returned by :func:`as_design`.
    y, s, o : ndarray, shape (n,)
        Labels (0/1), row weights and offsets (float64, contiguous).
    w : ndarray, shape (p,)
        Coefficients.
    b : float
        Intercept.
    diag : bool
        Also sum ``X^T d`` and ``(X * X)^T d`` (the Hessian's diagonal), in the same pass.

    Returns
    -------
    loss : float
        ``sum_i s_i l(y_i, z_i)``.
    xg : ndarray, shape (p,)
        ``X^T (s * g)``.
    gsum : float
        ``sum_i s_i g_i``.
    d : ndarray, shape (n,)
        ``s_i sigmoid(z_i) (1 - sigmoid(z_i))``.
    xd : ndarray, shape (2, p), or None
        ``X^T d`` and ``(X * X)^T d`` when ``diag``.
    """
    n, p = X.shape
    bounds = _bounds(X)
    k = len(bounds) - 1
    acc = _acc(k, p)
    accd = np.zeros((k, 2, p) if diag else (k, 2, 1))
    sums = np.zeros((k, 2))
    d = np.empty(n)
    w = np.ascontiguousarray(w, dtype=np.float64)
    args = (w, float(b), bounds, acc, sums, d, diag, accd)
    if sp.issparse(X):
        _csr_value_grad(X.indptr, X.indices, X.data, y, s, o, *args)
    elif X.flags.c_contiguous:
        _rows_value_grad(X, y, s, o, *args)
    else:
        _dense_value_grad(X, y, s, o, *args)
    xd = accd.sum(axis=0) if diag else None
    return float(sums[:, 0].sum()), acc.sum(axis=0), float(sums[:, 1].sum()), d, xd


def hess_vec(X: Design, d: np.ndarray, v: np.ndarray, vb: float) -> tuple[np.ndarray, float]:
    """The loss's Hessian (curvatures ``d``) applied to the direction ``(v, vb)``.

    Returns ``X^T (d * (X v + vb))`` and ``sum d * (X v + vb)``.
    """
    p = X.shape[1]
    bounds = _bounds(X)
    acc = _acc(len(bounds) - 1, p)
    sums = np.zeros((len(bounds) - 1, 1))
    v = np.ascontiguousarray(v, dtype=np.float64)
    if sp.issparse(X):
        _csr_hess_vec(X.indptr, X.indices, X.data, d, v, float(vb), bounds, acc, sums)
    elif X.flags.c_contiguous:
        _rows_hess_vec(X, d, v, float(vb), bounds, acc, sums)
    else:
        _dense_hess_vec(X, d, v, float(vb), bounds, acc, sums)
    return acc.sum(axis=0), float(sums.sum())


def hessian(X: Design, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The loss's full Hessian pieces: ``X^T D X``, ``X^T d`` and ``sum d``.

    For designs with few columns only (``p x p`` floats per chunk).
    """
    n, p = X.shape
    bounds = _bounds(X)
    k = max(1, min(len(bounds) - 1, _ACC_BUDGET // max(p * p, 1)))
    bounds = np.linspace(0, n, k + 1).round().astype(np.int64)
    acc = np.zeros((k, p, p))
    accv = np.zeros((k, p))
    if sp.issparse(X):
        _csr_hessian(X.indptr, X.indices, X.data, d, bounds, acc, accv)
        H = acc.sum(axis=0)
        return 0.5 * (H + H.T), accv.sum(axis=0), float(d.sum())
    _dense_hessian(X, d, bounds, acc, accv)
    H = np.triu(acc.sum(axis=0))
    return H + np.triu(H, 1).T, accv.sum(axis=0), float(d.sum())


def hessian_work(X: Design) -> tuple[float, float]:
    """Work of one :func:`hessian` and of one :func:`value_grad`, in the same units.

    Measured: a CSR Hessian costs about 0.6 pass-units per pair of non-zeros in a row
    (divided by the row's non-zeros); the dense kernel about 0.25. Both numbers add up
    over row blocks, so a partitioned design sums them.
    """
    n, p = X.shape
    if sp.issparse(X):
        counts = np.diff(X.indptr).astype(np.float64)
        return float((counts * (counts + 1.0)).sum() / 2.0), X.nnz / 0.6
    return n * p * (p + 1) / 2.0, 4.0 * n * p


def column_moments(X: Design, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted column sums ``(sum s, X^T s, (X * X)^T s)``; partitions' values add up."""
    p = X.shape[1]
    bounds = _bounds(X)
    acc, acc2 = _acc(len(bounds) - 1, p), _acc(len(bounds) - 1, p)
    if sp.issparse(X):
        _csr_moments(X.indptr, X.indices, X.data, s, bounds, acc, acc2)
    else:
        _dense_moments(X, s, bounds, acc, acc2)
    return float(s.sum()), acc.sum(axis=0), acc2.sum(axis=0)

"""Per-entity L2 logistic regressions: damped Newton in compiled loops.

Every entity ``e`` of a random-effect coordinate solves, over its own rows ``R_e``::

    min_{w, b}  sum_{i in R_e} s_i * loss(y_i, o_i + x_i . w + b)
                + l2 / 2 * ||w||^2 + l2_b / 2 * b^2

Rows are addressed through an :class:`~gdmix.data.layout.EntityLayout`
(``perm``/``starts``) over a CSR design; nothing is copied per entity in Python.
Each entity works in its own feature subspace (the columns its rows touch): its
rows are gathered into a dense local design, then Newton steps with a Cholesky
solve and a backtracking (Armijo) line search run until the gradient is small.

Entities are split into blocks; a block is solved by one thread with buffers
allocated once per block, and blocks run in parallel (numba ``prange``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from gdmix.losses import loss_scalar, sigmoid_scalar

__all__ = ["NewtonStats", "score_entities", "solve_entities"]

# Each solve_entities call covers at most this many rows, so that progress can be shown.
_ROWS_PER_CALL = 2_000_000
_ENTITIES_PER_BLOCK = 64


@numba.njit(cache=True)
def _objective(X, ys, ss, os_, m, p, pen, beta, z):
    """Penalised objective at ``beta``; fills the margins ``z``."""
    f = 0.0
    for c in range(p):
        f += 0.5 * pen[c] * beta[c] * beta[c]
    for r in range(m):
        acc = os_[r]
        for c in range(p):
            acc += X[r, c] * beta[c]
        z[r] = acc
        f += ss[r] * loss_scalar(ys[r], acc)
    return f


@numba.njit(cache=True)
def _cholesky_solve(H, g, p, out):
    """Solve ``H out = g`` in place (H lower-triangular Cholesky). False if not PD."""
    for j in range(p):
        acc = H[j, j]
        for k in range(j):
            acc -= H[j, k] * H[j, k]
        if acc <= 0.0 or not math.isfinite(acc):
            return False
        djj = math.sqrt(acc)
        H[j, j] = djj
        for i in range(j + 1, p):
            acc = H[i, j]
            for k in range(j):
                acc -= H[i, k] * H[j, k]
            H[i, j] = acc / djj
    for i in range(p):
        acc = g[i]
        for k in range(i):
            acc -= H[i, k] * out[k]
        out[i] = acc / H[i, i]
    for i in range(p - 1, -1, -1):
        acc = out[i]
        for k in range(i + 1, p):
            acc -= H[k, i] * out[k]
        out[i] = acc / H[i, i]
    return True


@numba.njit(cache=True)
def _newton(X, ys, ss, os_, m, p, pen, beta, z, g, H, delta, trial, max_iter, tol):
    """Damped Newton on one entity. Returns (iterations, converged)."""
    wsum = 0.0
    for r in range(m):
        wsum += ss[r]
    gtol = tol * max(1.0, wsum)
    f = _objective(X, ys, ss, os_, m, p, pen, beta, z)
    for it in range(max_iter + 1):
        for c in range(p):
            g[c] = pen[c] * beta[c]
            for c2 in range(c + 1):
                H[c, c2] = 0.0
            H[c, c] = pen[c]
        for r in range(m):
            pr = sigmoid_scalar(z[r])
            gr = ss[r] * (pr - ys[r])
            hr = ss[r] * pr * (1.0 - pr)
            for c in range(p):
                xc = X[r, c]
                if xc != 0.0:
                    g[c] += gr * xc
                    hx = hr * xc
                    for c2 in range(c + 1):
                        H[c, c2] += hx * X[r, c2]
        gmax = 0.0
        for c in range(p):
            gmax = max(gmax, abs(g[c]))
        if gmax <= gtol:
            return it, True
        if it == max_iter:
            break
        ridge = 0.0
        while not _cholesky_solve(H, g, p, delta):
            # Singular Hessian (no penalty and collinear columns): rebuild with a ridge.
            ridge = 1e-10 if ridge == 0.0 else ridge * 100.0
            for c in range(p):
                H[c, c] = pen[c] + ridge
                for c2 in range(c):
                    H[c, c2] = 0.0
            for r in range(m):
                pr = sigmoid_scalar(z[r])
                hr = ss[r] * pr * (1.0 - pr)
                for c in range(p):
                    hx = hr * X[r, c]
                    for c2 in range(c + 1):
                        H[c, c2] += hx * X[r, c2]
        slope = 0.0
        for c in range(p):
            slope += g[c] * delta[c]
        step = 1.0
        # Inside the quadratic region the decrease is below the resolution of f, so an
        # Armijo test only sees rounding noise: take the full Newton step there.
        accepted = 0.5 * slope <= 1e-10 * (1.0 + abs(f))
        if accepted:
            for c in range(p):
                trial[c] = beta[c] - delta[c]
            f_new = _objective(X, ys, ss, os_, m, p, pen, trial, z)
        for _ in range(0 if accepted else 40):
            for c in range(p):
                trial[c] = beta[c] - step * delta[c]
            f_new = _objective(X, ys, ss, os_, m, p, pen, trial, z)
            if f_new <= f - 1e-4 * step * slope:
                accepted = True
                break
            step *= 0.5
        if not accepted:
            # No decrease is possible in floating point: we are at the optimum's precision.
            _objective(X, ys, ss, os_, m, p, pen, beta, z)
            return it, gmax <= 1e3 * gtol
        for c in range(p):
            beta[c] = trial[c]
        f = f_new
    return max_iter, False


def _solve_blocks_py(
    indptr, indices, data, perm, starts, y, s, o, entities, block_starts,
    l2, l2_b, fit_b, coef, icpt, max_iter, tol, n_iter, converged,
):  # fmt: skip
    d = coef.shape[1]
    n_blocks = len(block_starts) - 1
    for blk in prange(n_blocks):
        t0 = block_starts[blk]
        t1 = block_starts[blk + 1]
        m_max = 1
        nnz_max = 0
        for t in range(t0, t1):
            e = entities[t]
            m_max = max(m_max, starts[e + 1] - starts[e])
            nnz = 0
            for r in range(starts[e], starts[e + 1]):
                nnz += indptr[perm[r] + 1] - indptr[perm[r]]
            nnz_max = max(nnz_max, nnz)
        p_max = min(d, nnz_max) + 1
        loc = np.full(d, -1, np.int64)
        feat = np.empty(p_max, np.int64)
        X = np.empty((m_max, p_max))
        ys = np.empty(m_max)
        ss = np.empty(m_max)
        os_ = np.empty(m_max)
        z = np.empty(m_max)
        pen = np.empty(p_max)
        beta = np.empty(p_max)
        g = np.empty(p_max)
        H = np.empty((p_max, p_max))
        delta = np.empty(p_max)
        trial = np.empty(p_max)
        for t in range(t0, t1):
            e = entities[t]
            a = starts[e]
            m = starts[e + 1] - a
            dl = 0
            for r in range(m):
                row = perm[a + r]
                for k in range(indptr[row], indptr[row + 1]):
                    j = indices[k]
                    if loc[j] < 0:
                        loc[j] = dl
                        feat[dl] = j
                        dl += 1
            p = dl + fit_b
            if p == 0 or m == 0:
                # Nothing to fit: the prior's mode, zero, is the solution.
                for j in range(d):
                    coef[e, j] = 0.0
                icpt[e] = 0.0
                n_iter[t] = 0
                converged[t] = True
                continue
            for r in range(m):
                row = perm[a + r]
                ys[r] = y[row]
                ss[r] = s[row]
                os_[r] = o[row]
                for c in range(p):
                    X[r, c] = 0.0
                for k in range(indptr[row], indptr[row + 1]):
                    X[r, loc[indices[k]]] += data[k]
                if fit_b:
                    X[r, dl] = 1.0
            for c in range(dl):
                beta[c] = coef[e, feat[c]]
                pen[c] = l2
            if fit_b:
                beta[dl] = icpt[e]
                pen[dl] = l2_b
            it, ok = _newton(X, ys, ss, os_, m, p, pen, beta, z, g, H, delta, trial, max_iter, tol)
            n_iter[t] = it
            converged[t] = ok
            for j in range(d):
                coef[e, j] = 0.0
            for c in range(dl):
                coef[e, feat[c]] = beta[c]
                loc[feat[c]] = -1
            icpt[e] = beta[dl] if fit_b else 0.0


def _score_rows_py(indptr, indices, data, codes, coef, icpt, out):
    for i in prange(len(codes)):
        e = codes[i]
        if e < 0:
            out[i] = 0.0
            continue
        acc = icpt[e]
        for k in range(indptr[i], indptr[i + 1]):
            acc += data[k] * coef[e, indices[k]]
        out[i] = acc


# Each kernel is compiled twice: threaded (prange over blocks/rows) and serial. Small
# jobs run serially: waking a thread pool costs more than they do, and far more (ms per
# call) when the machine's other cores are busy.
_solve_blocks_par = numba.njit(cache=True, parallel=True)(_solve_blocks_py)
_solve_blocks_ser = numba.njit(cache=True)(_solve_blocks_py)
_score_rows_par = numba.njit(cache=True, parallel=True)(_score_rows_py)
_score_rows_ser = numba.njit(cache=True)(_score_rows_py)
_PARALLEL_MIN_ROWS = 50_000


def _threaded(n_rows: int) -> bool:
    return n_rows >= _PARALLEL_MIN_ROWS and numba.get_num_threads() > 1


@dataclass
class NewtonStats:
    """Diagnostics of one :func:`solve_entities` call."""

    n_solved: int
    n_converged: int
    mean_iter: float
    max_iter: int


def solve_entities(
    X: sp.csr_matrix,
    perm: np.ndarray,
    starts: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray,
    offset: np.ndarray,
    entities: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
    *,
    l2: float,
    intercept_l2: float,
    fit_intercept: bool = True,
    max_iter: int = 50,
    tol: float = 1e-9,
    progress: object | None = None,
) -> NewtonStats:
    """Solve the listed entities' regressions, updating ``coef``/``intercept`` in place.

    Parameters
    ----------
    X : csr_matrix, shape (n_rows, d)
        Design of the coordinate's feature shard, rows in table order.
    perm, starts : ndarray of int64
        Entity layout: entity ``e`` owns rows ``perm[starts[e]:starts[e+1]]``.
    y, sample_weight, offset : ndarray of float64, shape (n_rows,)
        Labels, weights and offsets (the other coordinates' scores) of every row.
    entities : ndarray of int64
        Entity codes to solve (others are left as they are).
    coef : ndarray of float64, shape (n_entities, d)
        Coefficients; read as the warm start, overwritten with the solution.
    intercept : ndarray of float64, shape (n_entities,)
        Intercepts; read as the warm start, overwritten.
    l2, intercept_l2 : float
        Prior precisions of the coefficients and of the intercept.
    fit_intercept : bool
        Fit a per-entity intercept.
    max_iter, tol : int, float
        Newton iteration limit; stop when ``max|grad| <= tol * max(1, sum of weights)``.
    progress : tqdm-like, optional
        Updated with the number of entities solved.

    Returns
    -------
    NewtonStats
    """
    X = X.tocsr()
    indptr = X.indptr.astype(np.int64)
    indices = X.indices.astype(np.int64)
    data = X.data.astype(np.float64)
    entities = np.ascontiguousarray(entities, dtype=np.int64)
    n_iter = np.zeros(len(entities), dtype=np.int64)
    converged = np.zeros(len(entities), dtype=np.bool_)
    rows = np.diff(starts)[entities]
    cum = np.cumsum(rows)
    cuts = np.searchsorted(
        cum, np.arange(_ROWS_PER_CALL, cum[-1] if len(cum) else 0, _ROWS_PER_CALL)
    )
    bounds = np.unique(np.concatenate([[0], cuts, [len(entities)]])).astype(np.int64)
    for lo, hi in itertools.pairwise(bounds):
        block_starts = np.append(np.arange(0, hi - lo, _ENTITIES_PER_BLOCK), hi - lo)
        kernel = _solve_blocks_par if _threaded(int(rows[lo:hi].sum())) else _solve_blocks_ser
        kernel(
            indptr, indices, data, perm, starts, y, sample_weight, offset, entities[lo:hi],
            block_starts.astype(np.int64), float(l2), float(intercept_l2), int(fit_intercept),
            coef, intercept, int(max_iter), float(tol), n_iter[lo:hi], converged[lo:hi],
        )  # fmt: skip
        if progress is not None:
            progress.update(int(hi - lo))
    return NewtonStats(
        n_solved=len(entities),
        n_converged=int(converged.sum()),
        mean_iter=float(n_iter.mean()) if len(n_iter) else 0.0,
        max_iter=int(n_iter.max()) if len(n_iter) else 0,
    )


def score_entities(
    X: sp.csr_matrix, codes: np.ndarray, coef: np.ndarray, intercept: np.ndarray
) -> np.ndarray:
    """Score rows: ``intercept[e] + x_i . coef[e]`` for row ``i`` of entity ``e = codes[i]``.

    Rows whose code is negative (entity unseen in training, or without a model) score 0.
    """
    X = X.tocsr()
    out = np.empty(X.shape[0])
    kernel = _score_rows_par if _threaded(X.shape[0]) else _score_rows_ser
    kernel(
        X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data.astype(np.float64),
        np.ascontiguousarray(codes, dtype=np.int64), coef, intercept, out,
    )  # fmt: skip
    return out

"""Per-entity terms of the Laplace approximation to a random effect's marginal likelihood,
and of its gradient in the prior precisions.

For an entity ``e`` with rows ``R_e`` (design rows ``x~_i = [x_i, 1]`` with the intercept),
Gaussian prior precisions ``P = diag(p)`` and the posterior mode ``t`` (``t = (w_e, b_e)``)::

    log p(y_e) ~= -sum_i s_i loss(y_i, z_i) - 1/2 t' P t + 1/2 log det P - 1/2 log det H

with ``H = sum_i h_i x~_i x~_i' + P``, ``h_i = s_i p_i (1 - p_i)``. Its derivative in a
prior precision ``p_c`` (of the slots ``j`` in component ``c``), the mode moving with it
(``dt/dp_c = -H^-1 D_c t``), is::

    -1/2 sum_{j in c} (t_j^2 + V_jj + 2 (V g)_j t_j) + 1/2 n_c / p_c

with ``V = H^-1`` and ``g = sum_i (-1/2 h'_i q_i + rho_i) x~_i`` the gradient of the
approximation's remaining terms in the mode: ``h'_i = s_i p_i (1 - p_i)(1 - 2 p_i)``,
``q_i = x~_i' V x~_i``, and ``rho_i`` the derivative of the other random effects'
``-1/2 log det`` in the row's score (their own ``-1/2 h'_i q_i``, which this kernel also
returns per row). :func:`laplace_terms` computes every entity's data loss, ``log det H``,
``diag V`` and ``(V g)_j t_j`` in one compiled pass.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from gdmix.losses import loss_scalar
from gdmix.solvers.rows import entry_column, entry_value, row_span, skip_entry

__all__ = ["LaplaceTerms", "laplace_terms"]


def _terms_py(indptr, indices, data, perm, starts, y, w, offset, entities, coef, intercept,
              precision, intercept_precision, fit_intercept, rho,
              loss_out, logdet_out, var_out, corr_out, row_out):  # fmt: skip
    d = coef.shape[1]
    k = d + 1 if fit_intercept else d
    for t in prange(len(entities)):
        e = entities[t]
        H = np.zeros((k, k))
        loss = 0.0
        xrow = np.zeros(k)
        for r in range(starts[e], starts[e + 1]):
            i = perm[r]
            z = offset[i] + (intercept[e] if fit_intercept else 0.0)
            lo, hi = row_span(data, indptr, i)
            for q in range(lo, hi):
                v = entry_value(data, i, q)
                if skip_entry(data, v):
                    continue
                z += v * coef[e, entry_column(data, indices, q)]
            loss += w[i] * loss_scalar(y[i], z)
            p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
            h = w[i] * p * (1.0 - p)
            if h == 0.0:
                continue
            xrow[:] = 0.0
            for q in range(lo, hi):
                v = entry_value(data, i, q)
                if skip_entry(data, v):
                    continue
                xrow[entry_column(data, indices, q)] = v
            if fit_intercept:
                xrow[d] = 1.0
            for a in range(k):
                ha = h * xrow[a]
                for b in range(a + 1):
                    H[a, b] += ha * xrow[b]
        for j in range(d):
            H[j, j] += precision[e, j]
        if fit_intercept:
            H[d, d] += intercept_precision[e]
        # Cholesky (lower triangle of L in H); log det = 2 sum log diag(L).
        logdet = 0.0
        for j in range(k):
            s = H[j, j]
            for m in range(j):
                s -= H[j, m] * H[j, m]
            if s <= 1e-300:
                s = 1e-300
            ljj = math.sqrt(s)
            H[j, j] = ljj
            logdet += 2.0 * math.log(ljj)
            for a in range(j + 1, k):
                s2 = H[a, j]
                for m in range(j):
                    s2 -= H[a, m] * H[j, m]
                H[a, j] = s2 / ljj
        # V = H^-1 = L^-T L^-1: invert L (lower) into Li, then V = Li' Li.
        Li = np.zeros((k, k))
        for j in range(k):
            Li[j, j] = 1.0 / H[j, j]
            for a in range(j + 1, k):
                s3 = 0.0
                for m in range(j, a):
                    s3 -= H[a, m] * Li[m, j]
                Li[a, j] = s3 / H[a, a]
        V = np.zeros((k, k))
        for a in range(k):
            for b in range(a + 1):
                s4 = 0.0
                for m in range(a, k):
                    s4 += Li[m, a] * Li[m, b]
                V[a, b] = s4
                V[b, a] = s4
        # Second pass over the rows: leverages q_i, the gradient g of the remaining terms.
        g = np.zeros(k)
        for r in range(starts[e], starts[e + 1]):
            i = perm[r]
            z = offset[i] + (intercept[e] if fit_intercept else 0.0)
            lo, hi = row_span(data, indptr, i)
            xrow[:] = 0.0
            for q in range(lo, hi):
                v = entry_value(data, i, q)
                if skip_entry(data, v):
                    continue
                c = entry_column(data, indices, q)
                xrow[c] = v
                z += v * coef[e, c]
            if fit_intercept:
                xrow[d] = 1.0
            p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
            h1 = w[i] * p * (1.0 - p) * (1.0 - 2.0 * p)
            # q_i = x' H^-1 x = |L^-1 x|^2 (Li is lower triangular)
            lev = 0.0
            for a in range(k):
                acc = 0.0
                for b in range(a + 1):
                    acc += Li[a, b] * xrow[b]
                lev += acc * acc
            own = -0.5 * h1 * lev
            row_out[i] = own
            coeff = own + rho[i]
            for a in range(k):
                g[a] += coeff * xrow[a]
        for a in range(k):
            acc = 0.0
            for b in range(k):
                acc += V[a, b] * g[b]
            mode = coef[e, a] if a < d else intercept[e]
            corr_out[t, a] = acc * mode
            var_out[t, a] = V[a, a]
        loss_out[t] = loss
        logdet_out[t] = logdet


_terms_par = numba.njit(cache=True, parallel=True)(_terms_py)
_terms_ser = numba.njit(cache=True)(_terms_py)


class LaplaceTerms:
    """What :func:`laplace_terms` returns, per entity evaluated (and per design row).

    Attributes
    ----------
    loss : ndarray, shape (m,)
        Weighted data loss at the mode.
    logdet : ndarray, shape (m,)
        ``log det H``.
    variance : ndarray, shape (m, k)
        ``diag H^-1``: the posterior variances (slopes, then the intercept).
    correction : ndarray, shape (m, k)
        ``(H^-1 g)_j t_j``: how the modes' motion enters the gradient.
    row_terms : ndarray, shape (n_rows,)
        ``-1/2 h'_i q_i`` of every design row (0 for rows of entities not evaluated):
        this coordinate's ``rho`` contribution to another random effect's gradient.
    """

    def __init__(self, loss, logdet, variance, correction, row_terms) -> None:  # type: ignore[no-untyped-def]
        self.loss, self.logdet = loss, logdet
        self.variance, self.correction, self.row_terms = variance, correction, row_terms


def laplace_terms(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    perm: np.ndarray,
    starts: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    offset: np.ndarray,
    entities: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
    precision: np.ndarray,
    intercept_precision: np.ndarray,
    *,
    fit_intercept: bool,
    rho: np.ndarray | None = None,
) -> LaplaceTerms:
    """Every entity's Laplace terms at the current modes (see the module's documentation).

    Parameters
    ----------
    arrays : tuple
        ``(indptr, indices, data)`` of the design (:func:`gdmix.solvers.newton.design_arrays`).
    perm, starts : ndarray of int64
        Entity layout: entity ``e`` owns rows ``perm[starts[e]:starts[e+1]]``.
    y, weight, offset : ndarray of float64
        Labels, weights and offsets of every design row.
    entities : ndarray of int64
        Entities to evaluate.
    coef : ndarray, shape (n_entities, d)
        Posterior modes of the slopes (dense).
    intercept : ndarray, shape (n_entities,)
        Posterior modes of the intercepts.
    precision : ndarray, shape (n_entities, d)
        Prior precision of every slope.
    intercept_precision : ndarray, shape (n_entities,)
        Prior precision of every intercept.
    fit_intercept : bool
        Whether the entities have an intercept.
    rho : ndarray, shape (n_rows,), optional
        The other random effects' ``-1/2 h'_i q_i`` per design row (default 0).

    Returns
    -------
    LaplaceTerms
    """
    n = len(entities)
    d = coef.shape[1]
    k = d + 1 if fit_intercept else d
    n_rows = len(y)
    loss, logdet = np.zeros(n), np.zeros(n)
    variance, correction = np.zeros((n, k)), np.zeros((n, k))
    row_terms = np.zeros(n_rows)
    rho = np.zeros(n_rows) if rho is None else np.ascontiguousarray(rho, dtype=np.float64)
    kernel = _terms_par if len(perm) > 50_000 else _terms_ser
    kernel(*arrays, np.ascontiguousarray(perm, dtype=np.int64),
           np.ascontiguousarray(starts, dtype=np.int64), y, weight, offset,
           np.ascontiguousarray(entities, dtype=np.int64), np.ascontiguousarray(coef),
           intercept, np.ascontiguousarray(precision), intercept_precision,
           fit_intercept, rho, loss, logdet, variance, correction, row_terms)  # fmt: skip
    return LaplaceTerms(loss, logdet, variance, correction, row_terms)

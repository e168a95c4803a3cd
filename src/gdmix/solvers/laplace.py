"""Per-entity terms of the Laplace approximation to a random effect's marginal likelihood.

For an entity ``e`` with rows ``R_e`` and Gaussian prior precisions ``p`` (slopes) and
``p_b`` (intercept), at the posterior mode ``(w_e, b_e)``::

    log p(y_e) ~= -sum_{i in R_e} s_i loss(y_i, o_i + x_i . w_e + b_e)
                  - 1/2 sum_j p_j w_ej^2 - 1/2 p_b b_e^2
                  + 1/2 sum_j log p_j + 1/2 log p_b - 1/2 log det H_e

with ``H_e = sum_i s_i p_i (1 - p_i) [x_i, 1][x_i, 1]^T + diag(p, p_b)`` the Hessian of
the negative log posterior. :func:`laplace_terms` returns each entity's data loss and
``log det H_e`` in one compiled pass (dense Hessians: shards of at most a few hundred
features), the rest is cheap arithmetic done by the caller.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from gdmix.losses import loss_scalar
from gdmix.solvers.rows import entry_column, entry_value, row_span, skip_entry

__all__ = ["laplace_terms"]


def _terms_py(indptr, indices, data, perm, starts, y, w, offset, entities, coef, intercept,
              precision, intercept_precision, fit_intercept, loss_out, logdet_out):  # fmt: skip
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
                if xrow[a] == 0.0:
                    continue
                ha = h * xrow[a]
                for b in range(a + 1):
                    H[a, b] += ha * xrow[b]
        for j in range(d):
            H[j, j] += precision[e, j]
        if fit_intercept:
            H[d, d] += intercept_precision[e]
        # Cholesky in place (lower triangle); log det = 2 sum log diag(L).
        logdet = 0.0
        for j in range(k):
            s = H[j, j]
            for m in range(j):
                s -= H[j, m] * H[j, m]
            if s <= 0.0:
                s = 1e-300
            ljj = math.sqrt(s)
            H[j, j] = ljj
            logdet += 2.0 * math.log(ljj)
            for a in range(j + 1, k):
                s2 = H[a, j]
                for m in range(j):
                    s2 -= H[a, m] * H[j, m]
                H[a, j] = s2 / ljj
        loss_out[t] = loss
        logdet_out[t] = logdet


_terms_par = numba.njit(cache=True, parallel=True)(_terms_py)
_terms_ser = numba.njit(cache=True)(_terms_py)


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
) -> tuple[np.ndarray, np.ndarray]:
    """Data loss and ``log det H_e`` of every entity in ``entities``.

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

    Returns
    -------
    loss, logdet : ndarray of float64, shape (len(entities),)
    """
    n = len(entities)
    loss = np.zeros(n)
    logdet = np.zeros(n)
    kernel = _terms_par if len(perm) > 50_000 else _terms_ser
    kernel(*arrays, np.ascontiguousarray(perm, dtype=np.int64),
           np.ascontiguousarray(starts, dtype=np.int64), y, weight, offset,
           np.ascontiguousarray(entities, dtype=np.int64), np.ascontiguousarray(coef),
           intercept, np.ascontiguousarray(precision), intercept_precision,
           fit_intercept, loss, logdet)  # fmt: skip
    return loss, logdet

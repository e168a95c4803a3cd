"""Per-entity terms of the Laplace approximation to a random effect's marginal likelihood,
of its gradient and of its curvature in the prior precisions, with the posterior modes
found on the way.

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
returns per row).

The curvature used for Newton steps on the precisions is the exact one of the Gaussian
approximation (``h_i`` held at the mode)::

    d^2 / dp_c dp_c' = sum_{j in c, l in c'} (t_j V_jl t_l + 1/2 V_jl^2) - delta_cc' n_c / (2 p_c^2)

:func:`laplace_terms` computes all of it in one compiled pass over the entities. With
``max_newton > 0`` it first moves every entity to its posterior mode at the precisions
given (damped Newton steps, warm-started from the coefficients passed in, which it
updates in place): the estimation's inner solves and its Laplace terms share the same
Hessians and Cholesky factors. Rows are read sparsely (a dense row's zeros are skipped),
so a row costs the square of its non-zeros, not of the shard's width.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from gdmix.jit_variants import serial_and_parallel
from gdmix.solvers.rows import entry_column, entry_value, row_span, skip_entry

__all__ = ["LaplaceTerms", "ModeCache", "laplace_terms"]

#: Work (rows times their width, plus the entities' factorisations) from which a pass
#: runs on several threads: about a millisecond, against tens of microseconds to start
#: them.
_PARALLEL_MIN_WORK = 1_000_000
_ARMIJO = 1e-4
_MAX_HALVINGS = 40


@numba.njit(cache=True, inline="always")
def _gather(data, indptr, indices, i, d, fit_b, idx, val):  # type: ignore[no-untyped-def]
    """Non-zeros of row ``i`` (and the intercept's 1) into ``idx``/``val``; their count."""
    lo, hi = row_span(data, indptr, i)
    n = 0
    for q in range(lo, hi):
        v = entry_value(data, i, q)
        if skip_entry(data, v):
            continue
        idx[n] = entry_column(data, indices, q)
        val[n] = v
        n += 1
    if fit_b:
        idx[n] = d
        val[n] = 1.0
        n += 1
    return n


@numba.njit(cache=True, inline="always")
def _sigmoid(z):  # type: ignore[no-untyped-def]
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


#: Floating-point reassociation for the small dense factorisations: their dot products
#: then run on SIMD lanes (a few ulps of difference, no change in what is computed).
_FAST = {"reassoc", "contract", "nsz"}


@numba.njit(cache=True, fastmath=_FAST)
def _cholesky(A, k):  # type: ignore[no-untyped-def]
    """Lower Cholesky factor of the lower triangle of ``A`` in place; ``log det A``."""
    logdet = 0.0
    for j in range(k):
        s = A[j, j]
        for m in range(j):
            s -= A[j, m] * A[j, m]
        if s <= 1e-300:
            s = 1e-300
        ljj = math.sqrt(s)
        A[j, j] = ljj
        logdet += 2.0 * math.log(ljj)
        inv = 1.0 / ljj
        for a in range(j + 1, k):
            s2 = A[a, j]
            for m in range(j):
                s2 -= A[a, m] * A[j, m]
            A[a, j] = s2 * inv
    return logdet


@numba.njit(cache=True, fastmath=_FAST)
def _inverse(L, k, Li, V):  # type: ignore[no-untyped-def]
    """``V = (L L')^-1`` (both triangles) from the lower factor ``L``, through
    ``Li = L^-1`` (lower): row by row, each row an update by the rows above it."""
    for a in range(k):
        for j in range(a):
            Li[a, j] = 0.0
        for m in range(a):
            lam = L[a, m]
            for j in range(m + 1):
                Li[a, j] -= lam * Li[m, j]
        inv = 1.0 / L[a, a]
        for j in range(a):
            Li[a, j] *= inv
        Li[a, a] = inv
    # V = Li' Li = sum_m (row m of Li)' (row m of Li), lower triangle first.
    for a in range(k):
        for b in range(a + 1):
            V[a, b] = 0.0
    for m in range(k):
        for a in range(m + 1):
            lma = Li[m, a]
            for b in range(a + 1):
                V[a, b] += lma * Li[m, b]
    for a in range(k):
        for b in range(a):
            V[b, a] = V[a, b]


@numba.njit(cache=True)
def _accumulate(data, indptr, indices, perm, lo_r, hi_r, y, w, offset, d, fit_b, tv,
                H, grad, idx, val, prob, rho, use_rho):  # type: ignore[no-untyped-def]  # fmt: skip
    """Data loss at ``tv``; its gradient into ``grad``, Hessian (lower) into ``H``, every
    row's probability into ``prob``. Returns ``(loss, sum_i rho_i s_i)`` (``s_i`` the
    row's score without its offset; 0 without ``use_rho``)."""
    k = len(tv)
    for a in range(k):
        grad[a] = 0.0
        for b in range(a + 1):
            H[a, b] = 0.0
    loss = 0.0
    rs = 0.0
    for r in range(lo_r, hi_r):
        i = perm[r]
        n = _gather(data, indptr, indices, i, d, fit_b, idx, val)
        s = 0.0
        for a in range(n):
            s += val[a] * tv[idx[a]]
        z = offset[i] + s
        if use_rho:
            rs += rho[i] * s
        wi = w[i]
        # One exp per row: e = exp(-|z|) gives the loss and the probability.
        e = math.exp(-abs(z))
        loss += wi * (max(z, 0.0) - y[i] * z + math.log1p(e))
        p = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
        prob[i] = p
        res = wi * (p - y[i])
        h = wi * p * (1.0 - p)
        for a in range(n):
            ia = idx[a]
            grad[ia] += res * val[a]
            ha = h * val[a]
            for c in range(a + 1):
                ic = idx[c]
                if ia >= ic:
                    H[ia, ic] += ha * val[c]
                else:
                    H[ic, ia] += ha * val[c]
    return loss, rs


@numba.njit(cache=True)
def _solve_entity(data, indptr, indices, perm, lo_r, hi_r, y, w, offset, d, fit_b, tv, pv,
                  max_newton, tol, H, grad, step, tprev, idx, val, prob, rho, use_rho,
                  gdat, start):  # type: ignore[no-untyped-def]  # fmt: skip
    """Damped Newton steps from ``tv`` to the posterior mode at precisions ``pv``.

    Returns ``(loss, steps, converged, rs0, fresh)``: ``rs0`` the ``rho`` sum at the
    starting ``tv``, ``fresh`` whether ``prob`` holds the rows' probabilities at the
    final ``tv`` (else no row was read: see ``start``). ``H`` and ``gdat`` hold the data
    Hessian (lower triangle, prior not added) and gradient at the final ``tv``. With
    ``start[0] >= 0``, ``H``, ``gdat``, ``start[0]`` (the loss) and ``start[1]`` (the
    ``rho`` sum) already hold the data terms at ``tv`` (a loss is never negative): the
    first pass over the rows is skipped (its results would be the same). An Armijo line
    search is folded into the next accumulation (a rejected step costs one pass over the
    rows).
    """
    k = len(tv)
    wsum = 0.0
    for r in range(lo_r, hi_r):
        wsum += w[perm[r]]
    gtol = tol * max(1.0, wsum)
    steps = 0
    halvings = 0
    alpha = 1.0
    have_step = False
    obj_prev = 0.0
    gs_prev = 0.0
    converged = False
    stuck = False
    loss = 0.0
    rs0 = 0.0
    fresh = False
    first = True
    while True:
        if first and start[0] >= 0.0:
            loss, rs0 = start[0], start[1]
        else:
            loss, rs = _accumulate(data, indptr, indices, perm, lo_r, hi_r, y, w, offset, d,
                                   fit_b, tv, H, gdat, idx, val, prob, rho, use_rho)  # fmt: skip
            fresh = True
            if first:
                rs0 = rs
        first = False
        obj = loss
        for j in range(k):
            obj += 0.5 * pv[j] * tv[j] * tv[j]
        # Inside the quadratic region the decrease is below the resolution of the
        # objective, so the Armijo test would only see rounding noise: no test there.
        tiny = -0.5 * gs_prev <= 1e-10 * (1.0 + abs(obj_prev))
        if have_step and not tiny and not (obj <= obj_prev + _ARMIJO * alpha * gs_prev):
            alpha *= 0.5
            halvings += 1
            if halvings > _MAX_HALVINGS:  # no decrease in floating point: back to the last point
                stuck = True
                have_step = False
                alpha = 0.0
            for j in range(k):
                tv[j] = tprev[j] + alpha * step[j]
            continue
        gmax = 0.0
        for j in range(k):
            grad[j] = gdat[j] + pv[j] * tv[j]
            gmax = max(gmax, abs(grad[j]))
        if gmax <= gtol or stuck:
            converged = gmax <= (1e3 if stuck else 1.0) * gtol
            break
        if steps >= max_newton:
            break
        # Newton step: (H + P) step = -grad through the Cholesky factor of H + P (in
        # place: the next accumulation starts H afresh).
        for a in range(k):
            H[a, a] += pv[a]
        _cholesky(H, k)
        for a in range(k):  # forward: L u = -grad
            s = -grad[a]
            for m in range(a):
                s -= H[a, m] * step[m]
            step[a] = s / H[a, a]
        for a in range(k - 1, -1, -1):  # backward: L' step = u
            s = step[a]
            for m in range(a + 1, k):
                s -= H[m, a] * step[m]
            step[a] = s / H[a, a]
        gs = 0.0
        for j in range(k):
            gs += grad[j] * step[j]
            tprev[j] = tv[j]
            tv[j] += step[j]
        obj_prev, gs_prev, alpha, halvings, have_step = obj, gs, 1.0, 0, True
        steps += 1
    return loss, steps, converged, rs0, fresh


def _pass_py(indptr, indices, data, perm, starts, y, w, offset, entities, chunks, coef,
             intercept, precision, intercept_precision, fit_b, rho, use_rho, comp, ncomp,
             max_newton, tol, width, loss_out, logdet_out, rs_out, iter_out, conv_out,
             var_out, corr_out, row_out, q_out, prob, use_cache, cache_h, cache_g,
             cache_s):  # type: ignore[no-untyped-def]  # fmt: skip
    d = coef.shape[1]
    k = d + 1 if fit_b else d
    shared = precision.shape[0] == 1
    for ch in prange(len(chunks) - 1):
        H = np.zeros((k, k))
        Li = np.zeros((k, k))
        V = np.zeros((k, k))
        tv, pv, grad = np.zeros(k), np.zeros(k), np.zeros(k)
        step, tprev, g, gdat = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
        start = np.full(2, -1.0)
        q_loc = np.zeros((max(ncomp, 1), max(ncomp, 1)))
        idx = np.zeros(width, dtype=np.int64)
        val = np.zeros(width)
        for t in range(chunks[ch], chunks[ch + 1]):
            e = entities[t]
            pe = 0 if shared else e
            for j in range(d):
                tv[j] = coef[e, j]
                pv[j] = precision[pe, j]
            if fit_b:
                tv[d] = intercept[e]
                pv[d] = intercept_precision[pe]
            lo_r, hi_r = starts[e], starts[e + 1]
            start[0] = -1.0
            if use_cache and cache_s[e, 2] > 0.0:  # the data terms at tv, from the last pass
                for a in range(k):
                    gdat[a] = cache_g[e, a]
                    for b in range(a + 1):
                        H[a, b] = cache_h[e, a, b]
                start[0] = cache_s[e, 0]
                start[1] = cache_s[e, 1]
            loss, steps, ok, rs0, fresh = _solve_entity(
                data, indptr, indices, perm, lo_r, hi_r, y, w, offset, d, fit_b, tv, pv,
                max_newton, tol, H, grad, step, tprev, idx, val, prob, rho, use_rho, gdat, start,
            )  # fmt: skip
            rs_out[t, 0] = rs0
            for j in range(d):
                coef[e, j] = tv[j]
            if fit_b:
                intercept[e] = tv[d]
            if use_cache:
                for a in range(k):
                    cache_g[e, a] = gdat[a]
                    for b in range(a + 1):
                        cache_h[e, a, b] = H[a, b]
                cache_s[e, 0] = loss
                cache_s[e, 2] = 1.0
            for a in range(k):
                H[a, a] += pv[a]
            logdet = _cholesky(H, k)
            _inverse(H, k, Li, V)  # V = H^-1
            # Second pass over the rows: leverages q_i, the gradient g of the other terms.
            for a in range(k):
                g[a] = 0.0
            rs = 0.0
            for r in range(lo_r, hi_r):
                i = perm[r]
                n = _gather(data, indptr, indices, i, d, fit_b, idx, val)
                s = 0.0
                for a in range(n):
                    s += val[a] * tv[idx[a]]
                p = prob[i] if fresh else _sigmoid(offset[i] + s)
                h1 = w[i] * p * (1.0 - p) * (1.0 - 2.0 * p)
                lev = 0.0
                for a in range(n):
                    va = val[a]
                    ia = idx[a]
                    lev += va * va * V[ia, ia]
                    for c in range(a):
                        lev += 2.0 * va * val[c] * V[ia, idx[c]]
                own = -0.5 * h1 * lev
                row_out[i] = own
                coeff = own
                if use_rho:
                    coeff += rho[i]
                    rs += rho[i] * s
                for a in range(n):
                    g[idx[a]] += coeff * val[a]
            if use_cache:
                cache_s[e, 1] = rs
            for a in range(k):
                acc = 0.0
                for b in range(k):
                    acc += V[a, b] * g[b]
                corr_out[t, a] = acc * tv[a]
                var_out[t, a] = V[a, a]
            if ncomp > 0:
                for ca in range(ncomp):
                    for cb in range(ncomp):
                        q_loc[ca, cb] = 0.0
                for a in range(k):
                    ca = comp[a]
                    ta = tv[a]
                    for b in range(k):
                        vab = V[a, b]
                        q_loc[ca, comp[b]] += ta * vab * tv[b] + 0.5 * vab * vab
                for ca in range(ncomp):
                    for cb in range(ncomp):
                        q_out[ch, ca, cb] += q_loc[ca, cb]
            loss_out[t] = loss
            logdet_out[t] = logdet
            rs_out[t, 1] = rs
            iter_out[t] = steps
            conv_out[t] = ok


_pass_ser, _pass_par = serial_and_parallel(_pass_py)


class ModeCache:
    """Every entity's data terms at its current mode (the data Hessian and gradient, the
    loss and the ``rho`` sum), kept from one :func:`laplace_terms` call to the next.

    The next call at other precisions starts its Newton steps where the last one left the
    modes, so its first pass over the rows would recompute exactly these: with the cache
    it is skipped (one pass in about four). Valid only while the rows, labels, weights,
    offsets and ``rho`` stay as they were and only :func:`laplace_terms` moves the modes:
    make a new cache when any of them changes.

    Parameters
    ----------
    n_entities : int
        Rows of the coefficient arrays.
    k : int
        Slots per entity (slopes, and the intercept).
    """

    #: Largest cache made by :meth:`make` (the Hessians take ``8 k^2`` bytes an entity).
    MAX_BYTES = 256 * 2**20

    def __init__(self, n_entities: int, k: int) -> None:
        self.hessian = np.zeros((n_entities, k, k))
        self.gradient = np.zeros((n_entities, k))
        self.scalars = np.zeros((n_entities, 3))  # loss, rho sum, valid

    @classmethod
    def make(cls, n_entities: int, k: int) -> ModeCache | None:
        """A cache, or None when it would take more than :attr:`MAX_BYTES`."""
        if 8 * n_entities * (k * k + k + 3) > cls.MAX_BYTES:
            return None
        return cls(n_entities, k)


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
    rho_scores : ndarray, shape (m, 2)
        ``sum_i rho_i s_i`` over each entity's rows (``s_i`` its score), before the
        Newton steps and at the mode (zeros without ``rho``).
    n_iter : ndarray of int64, shape (m,)
        Newton steps taken.
    converged : ndarray of bool, shape (m,)
        Whether each entity's gradient met the tolerance.
    curvature : ndarray, shape (ncomp, ncomp)
        ``sum_e sum_{j in c, l in c'} (t_j V_jl t_l + 1/2 V_jl^2)`` by components.
    """

    def __init__(self, loss, logdet, variance, correction, row_terms, rho_scores=None,  # type: ignore[no-untyped-def]
                 n_iter=None, converged=None, curvature=None) -> None:  # fmt: skip
        self.loss, self.logdet = loss, logdet
        self.variance, self.correction, self.row_terms = variance, correction, row_terms
        self.rho_scores, self.n_iter, self.converged = rho_scores, n_iter, converged
        self.curvature = curvature


def _chunk_bounds(counts: np.ndarray, k: int, n_chunks: int) -> np.ndarray:
    """Split entities into ``n_chunks`` contiguous runs of about equal work (rows and
    the ``k^3`` of each entity's factorisation)."""
    n = len(counts)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    work = np.cumsum(counts.astype(np.float64) * (k + 2) + float(k) ** 3 / 3.0)
    cuts = np.searchsorted(work, work[-1] * np.arange(1, n_chunks) / n_chunks)
    return np.unique(np.concatenate([[0], cuts, [n]])).astype(np.int64)


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
    comp: np.ndarray | None = None,
    max_newton: int = 0,
    tol: float = 1e-9,
    cache: ModeCache | None = None,
) -> LaplaceTerms:
    """Every entity's Laplace terms at its posterior mode (see the module's documentation).

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
        Posterior modes of the slopes (dense, C-ordered float64); the starting point of
        the Newton steps, updated in place when ``max_newton > 0``.
    intercept : ndarray, shape (n_entities,)
        Posterior modes of the intercepts (updated in place likewise).
    precision : ndarray, shape (n_entities, d) or (1, d)
        Prior precision of every slope (one row: the same for every entity).
    intercept_precision : ndarray, shape (n_entities,) or (1,)
        Prior precision of every intercept.
    fit_intercept : bool
        Whether the entities have an intercept.
    rho : ndarray, shape (n_rows,), optional
        The other random effects' ``-1/2 h'_i q_i`` per design row (default 0).
    comp : ndarray of int64, shape (k,), optional
        Variance component of every slot (slopes, then the intercept): the curvature is
        summed by component. Default: no curvature.
    max_newton : int
        Newton steps allowed per entity before the terms are taken (0: the modes are
        taken as given).
    tol : float
        An entity is at its mode when ``max|grad| <= tol * max(1, sum of its weights)``.
    cache : ModeCache, optional
        The entities' data terms at the modes passed in, left by the previous call (see
        :class:`ModeCache`); updated. The results are the same with or without it.

    Returns
    -------
    LaplaceTerms
    """
    n = len(entities)
    d = coef.shape[1]
    k = d + 1 if fit_intercept else d
    indptr, indices, data = arrays
    width = k + 1
    if data.ndim == 1 and len(indptr) > 1:
        width = max(width, int(np.diff(indptr).max()) + 1)
    if max_newton > 0 and not (coef.flags.c_contiguous and coef.dtype == np.float64
                               and intercept.dtype == np.float64):  # fmt: skip
        raise ValueError("laplace_terms updates the modes in place: C-ordered float64 needed")
    coef = np.ascontiguousarray(coef, dtype=np.float64)
    intercept = np.ascontiguousarray(intercept, dtype=np.float64)
    use_rho = rho is not None
    rho = np.zeros(1) if rho is None else np.ascontiguousarray(rho, dtype=np.float64)
    ncomp = 0 if comp is None else int(comp.max()) + 1 if len(comp) else 0
    comp = np.zeros(max(k, 1), dtype=np.int64) if comp is None else comp.astype(np.int64)
    perm = np.ascontiguousarray(perm, dtype=np.int64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    entities = np.ascontiguousarray(entities, dtype=np.int64)
    counts = starts[entities + 1] - starts[entities]
    work = float(counts.sum()) * (k + 2) + n * float(k) ** 3 / 3.0
    parallel = work >= _PARALLEL_MIN_WORK and numba.get_num_threads() > 1
    chunks = _chunk_bounds(counts, k, 8 * numba.get_num_threads() if parallel else 1)
    loss, logdet = np.zeros(n), np.zeros(n)
    variance, correction = np.zeros((n, k)), np.zeros((n, k))
    rho_scores = np.zeros((n, 2))
    n_iter, converged = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.bool_)
    row_terms = np.zeros(len(y))
    curvature = np.zeros((max(len(chunks) - 1, 1), max(ncomp, 1), max(ncomp, 1)))
    prob = np.zeros(len(y))
    if cache is not None:
        if cache.hessian.shape != (coef.shape[0], k, k):
            raise ValueError("the mode cache does not fit the coefficients")
        held = (True, cache.hessian, cache.gradient, cache.scalars)
    else:
        held = (False, np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 3)))
    kernel = _pass_par if parallel else _pass_ser
    kernel(indptr, indices, data, perm, starts, y, weight, offset, entities, chunks, coef,
           intercept, np.ascontiguousarray(precision, dtype=np.float64),
           np.ascontiguousarray(intercept_precision, dtype=np.float64), fit_intercept, rho,
           use_rho, comp, ncomp, int(max_newton), float(tol), width, loss, logdet, rho_scores,
           n_iter, converged, variance, correction, row_terms, curvature, prob,
           *held)  # fmt: skip
    return LaplaceTerms(loss, logdet, variance, correction, row_terms, rho_scores, n_iter,
                        converged, curvature.sum(axis=0)[:ncomp, :ncomp])  # fmt: skip

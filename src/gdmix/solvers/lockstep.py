"""Per-entity Newton solves in lockstep: ``LANES`` entities at once, vectorised across them.

``LANES = 64``: inner loops over 64 lanes amortise their set-up; measured on
20-row x 10-feature entities, 8 lanes gave about 210k entities/s per core, 32 gave 238k,
64 gave 268k, 128 gave 258k (converged lanes wait for the group's slowest) and 256 gave
212k (``benchmarks/random_effects.py --quick``).

For small dense feature shards (``d`` up to a few dozen) the cost of a per-entity
solve is a handful of tiny loops; run one entity at a time and the compiler cannot
vectorise them. Here the entities of a *group* (up to ``LANES`` of them, with similar
row counts) are laid out lane-last, ``X[row, feature, lane]``, so every inner loop
runs across lanes with unit stride and compiles to SIMD code. Rows past an entity's
own count are padding with weight 0.

Each lane runs its own damped Newton iteration (gradient, Hessian, Cholesky, Armijo
backtracking) on the MAP objective with a Gaussian prior (mean ``mu``, precision
``pen``); lanes that converge are frozen while the others go on. ``exp(-|z|)`` is
computed once per row and iteration and serves both the objective and the sigmoid.
A lane whose Hessian is not positive definite (possible only with a zero prior) is
reported as not converged; the caller re-solves it with the scalar solver, which
regularises the Hessian. The design is CSR or a dense block (see
:mod:`gdmix.solvers.rows`).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from gdmix.jit_variants import serial_and_parallel
from gdmix.solvers.rows import entry_column, entry_value, row_span
from gdmix.vector_math import FMA_ONLY, INV_LN2, LN2_HI, LN2_LO, exp_neg_poly, log1p_poly

__all__ = ["LANES", "solve_groups_par", "solve_groups_ser"]

LANES = 64


@numba.njit(cache=True, fastmath=FMA_ONLY)
def _objective(X, ys, ss, os_, m, p, pen, mu, beta, z, ez, f, bits):
    """Objective of every lane at ``beta``; fills margins ``z`` and ``exp(-|z|)``."""
    nl = z.shape[1]
    for k in range(nl):
        f[k] = 0.0
    for c in range(p):
        for k in range(nl):
            dv = beta[c, k] - mu[c, k]
            f[k] += 0.5 * pen[c, k] * dv * dv
    scale = bits.view(np.float64)
    for r in range(m):
        for k in range(nl):
            z[r, k] = os_[r, k]
        for c in range(p):
            for k in range(nl):
                z[r, k] += X[r, c, k] * beta[c, k]
        for k in range(nl):
            a = min(abs(z[r, k]), 700.0)
            nf = math.floor(a * INV_LN2 + 0.5)
            ez[r, k] = exp_neg_poly((a - nf * LN2_HI) - nf * LN2_LO)
            bits[k] = (1023 - np.int64(nf)) << 52
        for k in range(nl):
            ee = ez[r, k] * scale[k]
            ez[r, k] = ee
            zz = z[r, k]
            f[k] += ss[r, k] * (max(zz, 0.0) - ys[r, k] * zz + log1p_poly(ee))


@numba.njit(cache=True, fastmath=FMA_ONLY)
def _gradient(X, ys, ss, m, p, pen, mu, beta, z, ez, w2, g):
    """Gradient of every lane; stores the Hessian row weights in ``w2``."""
    nl = z.shape[1]
    for c in range(p):
        for k in range(nl):
            g[c, k] = pen[c, k] * (beta[c, k] - mu[c, k])
    for r in range(m):
        for k in range(nl):
            ee = ez[r, k]
            inv = 1.0 / (1.0 + ee)
            pr = inv if z[r, k] >= 0.0 else ee * inv
            w1 = ss[r, k] * (pr - ys[r, k])
            w2[r, k] = ss[r, k] * pr * (1.0 - pr)
            z[r, k] = w1  # z is recomputed by the next objective evaluation
        for c in range(p):
            for k in range(nl):
                g[c, k] += z[r, k] * X[r, c, k]


@numba.njit(cache=True, fastmath=FMA_ONLY)
def _hessian(X, m, p, pen, w2, H, xw):
    """Lower triangle of every lane's Hessian (``xw``: a (p, lanes) scratch buffer)."""
    nl = w2.shape[1]
    for c in range(p):
        for c2 in range(c + 1):
            for k in range(nl):
                H[c, c2, k] = 0.0
        for k in range(nl):
            H[c, c, k] = pen[c, k]
    for r in range(m):
        for c in range(p):
            for k in range(nl):
                xw[c, k] = w2[r, k] * X[r, c, k]
        for c in range(p):
            for c2 in range(c + 1):
                for k in range(nl):
                    H[c, c2, k] += xw[c, k] * X[r, c2, k]


@numba.njit(cache=True, fastmath=FMA_ONLY)
def _cholesky(H, p, ok):
    """In-place lower Cholesky of every lane; ``ok[k]`` False where not positive definite."""
    nl = H.shape[2]
    for k in range(nl):
        ok[k] = True
    for j in range(p):
        for q in range(j):
            for k in range(nl):
                H[j, j, k] -= H[j, q, k] * H[j, q, k]
        for k in range(nl):
            v = H[j, j, k]
            if v > 0.0 and math.isfinite(v):
                H[j, j, k] = math.sqrt(v)
            else:
                ok[k] = False
                H[j, j, k] = 1.0
        for i in range(j + 1, p):
            for q in range(j):
                for k in range(nl):
                    H[i, j, k] -= H[i, q, k] * H[j, q, k]
            for k in range(nl):
                H[i, j, k] /= H[j, j, k]


@numba.njit(cache=True, fastmath=FMA_ONLY)
def _chol_solve(L, g, p, out):
    """Solve ``L L^T out = g`` for every lane."""
    nl = g.shape[1]
    for i in range(p):
        for k in range(nl):
            out[i, k] = g[i, k]
        for q in range(i):
            for k in range(nl):
                out[i, k] -= L[i, q, k] * out[q, k]
        for k in range(nl):
            out[i, k] /= L[i, i, k]
    for i in range(p - 1, -1, -1):
        for q in range(i + 1, p):
            for k in range(nl):
                out[i, k] -= L[q, i, k] * out[q, k]
        for k in range(nl):
            out[i, k] /= L[i, i, k]


@numba.njit(cache=True, fastmath=FMA_ONLY)
def _inverse_diagonal(L, p, out, work):
    """``diag((L L^T)^-1)`` for every lane: sum of squares of the columns of ``L^-1``."""
    nl = out.shape[1]
    for c in range(p):
        for k in range(nl):
            out[c, k] = 0.0
    for c in range(p):  # column c of L^-1 by forward substitution on e_c
        for i in range(p):
            for k in range(nl):
                work[i, k] = 0.0
        for k in range(nl):
            work[c, k] = 1.0 / L[c, c, k]
        for i in range(c + 1, p):
            for q in range(c, i):
                for k in range(nl):
                    work[i, k] -= L[i, q, k] * work[q, k]
            for k in range(nl):
                work[i, k] /= L[i, i, k]
        for i in range(c, p):
            for k in range(nl):
                out[c, k] += work[i, k] * work[i, k]


def _solve_groups_py(
    indptr, indices, data, perm, starts, y, s, o, entities, group_starts, block_starts,
    l2, l2_b, fit_b, has_prior, prior_mean, prior_mean_b, prior_prec, prior_prec_b,
    coef, icpt, var_mode, var, var_b, max_iter, tol, n_iter, converged,
):  # fmt: skip
    d = coef.shape[1]
    p = d + fit_b
    for blk in prange(len(block_starts) - 1):
        g0 = block_starts[blk]
        g1 = block_starts[blk + 1]
        m_max = 1
        for t in range(group_starts[g0], group_starts[g1]):
            e = entities[t]
            m_max = max(m_max, starts[e + 1] - starts[e])
        X = np.zeros((m_max, p, LANES))
        ys = np.zeros((m_max, LANES))
        ss = np.zeros((m_max, LANES))
        os_ = np.zeros((m_max, LANES))
        z = np.zeros((m_max, LANES))
        ez = np.zeros((m_max, LANES))
        w2 = np.zeros((m_max, LANES))
        pen = np.zeros((p, LANES))
        mu = np.zeros((p, LANES))
        beta = np.zeros((p, LANES))
        trial = np.zeros((p, LANES))
        g = np.zeros((p, LANES))
        delta = np.zeros((p, LANES))
        work = np.zeros((p, LANES))
        H = np.zeros((p, p, LANES))
        bits = np.zeros(LANES, dtype=np.int64)
        f = np.zeros(LANES)
        f_new = np.zeros(LANES)
        step = np.zeros(LANES)
        slope = np.zeros(LANES)
        gtol = np.zeros(LANES)
        ok = np.zeros(LANES, dtype=np.bool_)
        done = np.zeros(LANES, dtype=np.bool_)
        settled = np.zeros(LANES, dtype=np.bool_)
        lane_iter = np.zeros(LANES, dtype=np.int64)
        lane_conv = np.zeros(LANES, dtype=np.bool_)
        for grp in range(g0, g1):
            t0 = group_starts[grp]
            nk = group_starts[grp + 1] - t0
            m = 1
            for k in range(nk):
                e = entities[t0 + k]
                m = max(m, starts[e + 1] - starts[e])
            # Lay the group out lane-last; padding rows and lanes have weight 0.
            for r in range(m):
                for c in range(p):
                    for k in range(LANES):
                        X[r, c, k] = 0.0
                for k in range(LANES):
                    ys[r, k] = 0.0
                    ss[r, k] = 0.0
                    os_[r, k] = 0.0
            for k in range(LANES):
                gtol[k] = tol
                done[k] = k >= nk
                lane_iter[k] = 0
                lane_conv[k] = k >= nk
                for c in range(p):
                    beta[c, k] = 0.0
                    mu[c, k] = 0.0
                    pen[c, k] = 1.0
            for k in range(nk):
                e = entities[t0 + k]
                a = starts[e]
                wsum = 0.0
                for r in range(starts[e + 1] - a):
                    row = perm[a + r]
                    ys[r, k] = y[row]
                    ss[r, k] = s[row]
                    wsum += s[row]
                    os_[r, k] = o[row]
                    lo, hi = row_span(data, indptr, row)
                    for q in range(lo, hi):
                        X[r, entry_column(data, indices, q), k] += entry_value(data, row, q)
                    if fit_b:
                        X[r, d, k] = 1.0
                gtol[k] = tol * max(1.0, wsum)
                for c in range(d):
                    beta[c, k] = coef[e, c]
                    if has_prior:
                        mu[c, k] = prior_mean[e, c]
                        pen[c, k] = prior_prec[e, c]
                    else:
                        pen[c, k] = l2
                if fit_b:
                    beta[d, k] = icpt[e]
                    if has_prior:
                        mu[d, k] = prior_mean_b[e]
                        pen[d, k] = prior_prec_b[e]
                    else:
                        pen[d, k] = l2_b
            _objective(X, ys, ss, os_, m, p, pen, mu, beta, z, ez, f, bits)
            for it in range(max_iter + 1):
                _gradient(X, ys, ss, m, p, pen, mu, beta, z, ez, w2, g)
                n_active = 0
                for k in range(LANES):
                    if not done[k]:
                        gmax = 0.0
                        for c in range(p):
                            gmax = max(gmax, abs(g[c, k]))
                        if gmax <= gtol[k]:
                            done[k] = True
                            lane_conv[k] = True
                            lane_iter[k] = it
                        elif it == max_iter:
                            done[k] = True
                            lane_iter[k] = it
                        else:
                            n_active += 1
                if n_active == 0:
                    break
                _hessian(X, m, p, pen, w2, H, work)
                _cholesky(H, p, ok)
                _chol_solve(H, g, p, delta)
                for k in range(LANES):
                    slope[k] = 0.0
                    step[k] = 1.0
                    settled[k] = done[k]
                    if not done[k] and not ok[k]:
                        done[k] = True  # not positive definite: left to the scalar solver
                        settled[k] = True
                        lane_iter[k] = it
                for c in range(p):
                    for k in range(LANES):
                        slope[k] += g[c, k] * delta[c, k]
                        trial[c, k] = beta[c, k] if settled[k] else beta[c, k] - delta[c, k]
                for _ in range(41):
                    _objective(X, ys, ss, os_, m, p, pen, mu, trial, z, ez, f_new, bits)
                    retry = False
                    for k in range(LANES):
                        if settled[k]:
                            continue
                        tiny = 0.5 * slope[k] <= 1e-10 * (1.0 + abs(f[k]))
                        if tiny or f_new[k] <= f[k] - 1e-4 * step[k] * slope[k]:
                            settled[k] = True
                        elif step[k] < 1e-12:
                            # No decrease in floating point: at the optimum's precision.
                            settled[k] = True
                            done[k] = True
                            lane_iter[k] = it
                            gmax = 0.0
                            for c in range(p):
                                gmax = max(gmax, abs(g[c, k]))
                            lane_conv[k] = gmax <= 1e3 * gtol[k]
                            for c in range(p):
                                trial[c, k] = beta[c, k]
                            retry = True
                        else:
                            step[k] *= 0.5
                            for c in range(p):
                                trial[c, k] = beta[c, k] - step[k] * delta[c, k]
                            retry = True
                    if not retry:
                        break
                for c in range(p):
                    for k in range(LANES):
                        beta[c, k] = trial[c, k]
                for k in range(LANES):
                    f[k] = f_new[k]
            if var_mode > 0:
                _objective(X, ys, ss, os_, m, p, pen, mu, beta, z, ez, f, bits)
                _gradient(X, ys, ss, m, p, pen, mu, beta, z, ez, w2, g)
                _hessian(X, m, p, pen, w2, H, work)
                if var_mode == 1:
                    for c in range(p):
                        for k in range(LANES):
                            work[c, k] = 1.0 / H[c, c, k]
                else:
                    _cholesky(H, p, ok)
                    _inverse_diagonal(H, p, work, delta)
            for k in range(nk):
                e = entities[t0 + k]
                t = t0 + k
                n_iter[t] = lane_iter[k]
                converged[t] = lane_conv[k]
                for c in range(d):
                    coef[e, c] = beta[c, k]
                icpt[e] = beta[d, k] if fit_b else 0.0
                if var_mode > 0:
                    for c in range(d):
                        var[e, c] = work[c, k]
                    if fit_b:
                        var_b[e] = work[d, k]


solve_groups_ser, solve_groups_par = serial_and_parallel(_solve_groups_py, fastmath=FMA_ONLY)

"""Per-entity Newton solves in each entity's own feature subspace (scalar kernel).

Used for wide sparse shards and for entities the lockstep kernel does not take (many
rows, or a Hessian that needs regularising). An entity's rows are gathered into a
dense local design over the columns they touch; features it never touches keep the
prior's mode. Newton systems are solved by Cholesky, or by conjugate gradients with
Hessian-vector products when the entity touches ``cg_min_features`` columns or more.
Entities are split into blocks; each block is solved by one thread with buffers
allocated once per block. The design is CSR or a dense block (see
:mod:`gdmix.solvers.rows`; a dense row's zeros are not entries).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from gdmix.jit_variants import serial_and_parallel
from gdmix.losses import pointwise
from gdmix.solvers.rows import entry_column, entry_value, row_span, skip_entry

__all__ = ["solve_blocks_par", "solve_blocks_ser"]


@numba.njit(cache=True)
def _objective(X, ys, ss, os_, m, p, pen, mu, beta, z, task):
    """Penalised objective at ``beta``; fills the margins ``z``."""
    f = 0.0
    for c in range(p):
        f += 0.5 * pen[c] * (beta[c] - mu[c]) ** 2
    for r in range(m):
        acc = os_[r]
        for c in range(p):
            acc += X[r, c] * beta[c]
        z[r] = acc
        f += ss[r] * pointwise(task, ys[r], acc)[0]
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
def _hessian(X, m, p, pen, w2, ridge, H):
    """Lower triangle of ``X^T diag(w2) X + diag(pen) + ridge I``."""
    for c in range(p):
        for c2 in range(c):
            H[c, c2] = 0.0
        H[c, c] = pen[c] + ridge
    for r in range(m):
        for c in range(p):
            hx = w2[r] * X[r, c]
            if hx != 0.0:
                for c2 in range(c + 1):
                    H[c, c2] += hx * X[r, c2]


@numba.njit(cache=True)
def _hess_vec(X, m, p, pen, w2, v, out):
    for c in range(p):
        out[c] = pen[c] * v[c]
    for r in range(m):
        xv = 0.0
        for c in range(p):
            xv += X[r, c] * v[c]
        xv *= w2[r]
        for c in range(p):
            out[c] += xv * X[r, c]


@numba.njit(cache=True)
def _cg_solve(X, m, p, pen, w2, g, out, work):
    """Solve ``H out = g`` by conjugate gradients (``work``: at least 3 rows of length p)."""
    res = work[0]
    dirn = work[1]
    hd = work[2]
    rr = 0.0
    for c in range(p):
        out[c] = 0.0
        res[c] = g[c]
        dirn[c] = g[c]
        rr += g[c] * g[c]
    stop = 1e-20 * rr
    for _ in range(2 * p):
        if rr <= stop:
            break
        _hess_vec(X, m, p, pen, w2, dirn, hd)
        dhd = 0.0
        for c in range(p):
            dhd += dirn[c] * hd[c]
        if dhd <= 0.0:
            break
        alpha = rr / dhd
        rr_new = 0.0
        for c in range(p):
            out[c] += alpha * dirn[c]
            res[c] -= alpha * hd[c]
            rr_new += res[c] * res[c]
        beta = rr_new / rr
        rr = rr_new
        for c in range(p):
            dirn[c] = res[c] + beta * dirn[c]


@numba.njit(cache=True)
def _inverse_diagonal(L, p, out, work):
    """``diag((L L^T)^-1)`` from a lower Cholesky factor ``L``."""
    for c in range(p):
        out[c] = 0.0
    for c in range(p):
        for i in range(p):
            work[i] = 0.0
        work[c] = 1.0 / L[c, c]
        for i in range(c + 1, p):
            acc = 0.0
            for q in range(c, i):
                acc -= L[i, q] * work[q]
            work[i] = acc / L[i, i]
        for i in range(c, p):
            out[c] += work[i] * work[i]


@numba.njit(cache=True)
def _newton(
    X, ys, ss, os_, m, p, pen, mu, beta, z, g, H, delta, trial, w2, cg, max_iter, tol, task
):
    """Damped Newton on one entity. Returns (iterations, converged).

    With ``cg`` the Newton system is solved by conjugate gradients with Hessian-vector
    products (``H`` then holds CG work vectors), for entities with many local features.
    """
    wsum = 0.0
    for r in range(m):
        wsum += ss[r]
    gtol = tol * max(1.0, wsum)
    f = _objective(X, ys, ss, os_, m, p, pen, mu, beta, z, task)
    for it in range(max_iter + 1):
        for c in range(p):
            g[c] = pen[c] * (beta[c] - mu[c])
        for r in range(m):
            _, gr, hr = pointwise(task, ys[r], z[r])
            gr *= ss[r]
            w2[r] = ss[r] * hr
            for c in range(p):
                g[c] += gr * X[r, c]
        gmax = 0.0
        for c in range(p):
            gmax = max(gmax, abs(g[c]))
        if gmax <= gtol:
            return it, True
        if it == max_iter:
            break
        if cg:
            _cg_solve(X, m, p, pen, w2, g, delta, H)
        else:
            _hessian(X, m, p, pen, w2, 0.0, H)
        ridge = 0.0
        while not cg and not _cholesky_solve(H, g, p, delta):
            # Singular Hessian (no penalty and collinear columns): rebuild with a ridge.
            ridge = 1e-10 if ridge == 0.0 else ridge * 100.0
            _hessian(X, m, p, pen, w2, ridge, H)
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
            f_new = _objective(X, ys, ss, os_, m, p, pen, mu, trial, z, task)
        for _ in range(0 if accepted else 40):
            for c in range(p):
                trial[c] = beta[c] - step * delta[c]
            f_new = _objective(X, ys, ss, os_, m, p, pen, mu, trial, z, task)
            if f_new <= f - 1e-4 * step * slope:
                accepted = True
                break
            step *= 0.5
        if not accepted:
            # No decrease is possible in floating point: we are at the optimum's precision.
            _objective(X, ys, ss, os_, m, p, pen, mu, beta, z, task)
            return it, gmax <= 1e3 * gtol
        for c in range(p):
            beta[c] = trial[c]
        f = f_new
    return max_iter, False


@numba.njit(cache=True)
def _write_slots(feat, beta, vbuf, dl, q0, q1, slot_feat, slot_val, slot_var, with_var):
    """Write an entity's local solution into its slots, sorted by feature id."""
    for c in range(dl):
        q = q0 + c
        # Insertion sort by feature id (an entity touches few features).
        while q > q0 and slot_feat[q - 1] > feat[c]:
            slot_feat[q] = slot_feat[q - 1]
            slot_val[q] = slot_val[q - 1]
            if with_var:
                slot_var[q] = slot_var[q - 1]
            q -= 1
        slot_feat[q] = feat[c]
        slot_val[q] = beta[c]
        if with_var:
            slot_var[q] = vbuf[c]
    for q in range(q0 + dl, q1):
        slot_feat[q] = -1


def _solve_blocks_py(
    indptr, indices, data, perm, starts, y, s, o, entities, block_starts,
    l2, l2_b, fit_b, has_prior, prior_mean, prior_mean_b, prior_prec, prior_prec_b,
    coef, icpt, var_mode, var, var_b, cg_min_features, max_iter, tol, n_iter, converged,
    d, sparse, prev_ptr, prev_feat, prev_val, slot_ptr, slot_feat, slot_val, slot_var, task,
):  # fmt: skip
    # Dense storage: coef/var are (n_entities, d). Sparse storage (wide shards): the warm
    # start is read from prev_* (CSR rows per entity) and the solution written into each
    # entity's slots slot_ptr[e]:slot_ptr[e+1] (feature ids sorted, -1 for unused slots).
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
                lo, hi = row_span(data, indptr, perm[r])
                nnz += hi - lo
            nnz_max = max(nnz_max, nnz)
        p_max = min(d, nnz_max) + 1
        loc = np.full(d, -1, np.int64)
        feat = np.empty(p_max, np.int64)
        X = np.empty((m_max, p_max))
        w2 = np.empty(m_max)
        mu = np.empty(p_max)
        vbuf = np.empty(p_max)
        ys = np.empty(m_max)
        ss = np.empty(m_max)
        os_ = np.empty(m_max)
        z = np.empty(m_max)
        pen = np.empty(p_max)
        beta = np.empty(p_max)
        g = np.empty(p_max)
        H = np.empty((max(p_max, 3), p_max))
        delta = np.empty(p_max)
        trial = np.empty(p_max)
        for t in range(t0, t1):
            e = entities[t]
            a = starts[e]
            m = starts[e + 1] - a
            dl = 0
            for r in range(m):
                row = perm[a + r]
                lo, hi = row_span(data, indptr, row)
                for k in range(lo, hi):
                    if skip_entry(data, entry_value(data, row, k)):
                        continue
                    j = entry_column(data, indices, k)
                    if loc[j] < 0:
                        loc[j] = dl
                        feat[dl] = j
                        dl += 1
            p = dl + fit_b
            if p == 0 or m == 0:
                # Nothing to fit: the prior's mode is the solution.
                if sparse:
                    for q in range(slot_ptr[e], slot_ptr[e + 1]):
                        slot_feat[q] = -1
                for j in range(0 if sparse else d):
                    coef[e, j] = prior_mean[e, j] if has_prior else 0.0
                    if var_mode > 0:
                        var[e, j] = 1.0 / (prior_prec[e, j] if has_prior else l2)
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
                lo, hi = row_span(data, indptr, row)
                for k in range(lo, hi):
                    v = entry_value(data, row, k)
                    if not skip_entry(data, v):
                        X[r, loc[entry_column(data, indices, k)]] += v
                if fit_b:
                    X[r, dl] = 1.0
            for c in range(dl):
                j = feat[c]
                beta[c] = 0.0 if sparse else coef[e, j]
                pen[c] = prior_prec[e, j] if has_prior else l2
                mu[c] = prior_mean[e, j] if has_prior else 0.0
            if sparse:
                for q in range(prev_ptr[e], prev_ptr[e + 1]):
                    if loc[prev_feat[q]] >= 0:
                        beta[loc[prev_feat[q]]] = prev_val[q]
            if fit_b:
                beta[dl] = icpt[e]
                pen[dl] = prior_prec_b[e] if has_prior else l2_b
                mu[dl] = prior_mean_b[e] if has_prior else 0.0
            cg = p >= cg_min_features
            it, ok = _newton(
                X,
                ys,
                ss,
                os_,
                m,
                p,
                pen,
                mu,
                beta,
                z,
                g,
                H,
                delta,
                trial,
                w2,
                cg,
                max_iter,
                tol,
                task,
            )
            n_iter[t] = it
            converged[t] = ok
            # Features the entity never touches keep the prior's mode (and variance).
            for j in range(0 if sparse else d):
                coef[e, j] = prior_mean[e, j] if has_prior else 0.0
                if var_mode > 0:
                    var[e, j] = 1.0 / (prior_prec[e, j] if has_prior else l2)
            for c in range(dl):
                if not sparse:
                    coef[e, feat[c]] = beta[c]
                loc[feat[c]] = -1
            icpt[e] = beta[dl] if fit_b else 0.0
            if var_mode > 0:
                _objective(X, ys, ss, os_, m, p, pen, mu, beta, z, task)
                for r in range(m):
                    w2[r] = ss[r] * pointwise(task, ys[r], z[r])[2]
                _hessian(X, m, p, pen, w2, 0.0, H)
                if var_mode == 1:
                    for c in range(p):
                        vbuf[c] = 1.0 / H[c, c]
                else:
                    _cholesky_solve(H, g, p, delta)
                    _inverse_diagonal(H, p, vbuf, trial)
                for c in range(0 if sparse else dl):
                    var[e, feat[c]] = vbuf[c]
                if fit_b:
                    var_b[e] = vbuf[dl]
            if sparse:
                _write_slots(feat, beta, vbuf, dl, slot_ptr[e], slot_ptr[e + 1], slot_feat,
                             slot_val, slot_var, var_mode > 0)  # fmt: skip


solve_blocks_ser, solve_blocks_par = serial_and_parallel(_solve_blocks_py)

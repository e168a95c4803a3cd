"""Per-entity L2 logistic regressions (MAP with Gaussian priors): the random-effect solver.

Every entity ``e`` of a random-effect coordinate solves, over its own rows ``R_e``::

    min_{w, b}  sum_{i in R_e} s_i * loss(y_i, o_i + x_i . w + b)
                + 1/2 sum_j p_j (w_j - m_j)^2 + 1/2 p_b (b - m_b)^2

with prior precisions ``p`` (``l2`` and ``intercept_l2`` unless a per-entity prior is
given, as in incremental training) and prior means ``m`` (zero unless given). Rows are
addressed through an entity layout (``perm``/``starts``) over the design, a CSR matrix
or a dense block (numeric shards, see :mod:`gdmix.solvers.rows`); both give the same
solutions. Nothing is copied per entity in Python. Two compiled kernels share the work:

- :mod:`gdmix.solvers.lockstep` for small dense shards (``d <= LOCKSTEP_MAX_FEATURES``):
  entities sorted by row count are solved ``LANES`` at a time, vectorised across them;
- :mod:`gdmix.solvers.subspace` for wide sparse shards, very large entities, and any
  entity the lockstep kernel could not finish: one entity at a time in the subspace of
  the features it touches, Cholesky or conjugate-gradient Newton steps.

Both run their blocks of entities in parallel threads (numba ``prange``) for large jobs
and serially for small ones.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from gdmix.data.layout import empty_touched
from gdmix.jit_variants import serial_and_parallel
from gdmix.losses import TASK_CODES, task_code
from gdmix.prefetch import PREFETCH_DISTANCE, prefetch
from gdmix.solvers.lockstep import LANES, solve_groups_par, solve_groups_ser
from gdmix.solvers.rows import coef_at, entry_column, entry_value, row_span, skip_entry
from gdmix.solvers.subspace import solve_blocks_par, solve_blocks_ser

__all__ = ["EntityPrior", "NewtonStats", "design_arrays", "score_entities", "solve_entities"]

#: Shards with at most this many features use the lockstep kernel.
LOCKSTEP_MAX_FEATURES = 32
#: Entities with more rows than this use the subspace kernel (bounded buffers).
LOCKSTEP_MAX_ROWS = 1024
#: The subspace kernel switches from Cholesky to conjugate gradients at this many
#: local parameters.
CG_MIN_FEATURES = 96
_ROWS_PER_CALL = 2_000_000
_GROUPS_PER_BLOCK = 4
_ENTITIES_PER_BLOCK = 64
_PARALLEL_MIN_ROWS = 50_000
_VARIANCE_MODES = {"none": 0, "simple": 1, "full": 2}


@dataclass
class EntityPrior:
    """Per-entity Gaussian prior (incremental training): means and precisions.

    Attributes
    ----------
    mean, precision : ndarray, shape (n_entities, d)
    intercept_mean, intercept_precision : ndarray, shape (n_entities,)
    """

    mean: np.ndarray
    precision: np.ndarray
    intercept_mean: np.ndarray
    intercept_precision: np.ndarray


@dataclass
class NewtonStats:
    """Diagnostics of one :func:`solve_entities` call.

    With sparse (CSR) coefficient storage, ``coef`` and ``variance`` hold the updated
    matrices (a CSR matrix cannot be updated in place).
    """

    n_solved: int
    n_converged: int
    mean_iter: float
    max_iter: int
    coef: sp.csr_matrix | None = None
    variance: sp.csr_matrix | None = None


def _threaded(n_rows: int) -> bool:
    # Waking a thread pool costs more than small jobs (and ms per call when the other
    # cores are busy), so they run serially.
    return n_rows >= _PARALLEL_MIN_ROWS and numba.get_num_threads() > 1


def _csr_arrays(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays without copies (int32 or int64 indices, float64 values)."""
    index_type = np.int32 if X.indices.dtype == np.int32 else np.int64
    return (
        X.indptr.astype(index_type, copy=False),
        X.indices.astype(index_type, copy=False),
        X.data.astype(np.float64, copy=False),
    )


_NO_INDEX = np.zeros(1, dtype=np.int64)


def design_arrays(
    X: np.ndarray | sp.spmatrix, *, contiguous: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, data)`` of a design for the kernels, without copies.

    A sparse matrix gives its CSR arrays; a dense block (float64 or float32) is passed
    as ``data`` itself, with unused placeholders for ``indptr`` and ``indices``.
    ``contiguous`` asks for a C-ordered block (copied if it is not).
    """
    if sp.issparse(X):
        return _csr_arrays(X.tocsr())
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"a design must be 2-D. Got shape {X.shape} instead")
    if X.dtype not in (np.float64, np.float32):
        X = X.astype(np.float64)
    if contiguous:
        X = np.ascontiguousarray(X)
    return _NO_INDEX, _NO_INDEX, X


def _row_nonzeros(indptr: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Entries of every row (a dense row's non-zeros)."""
    if data.ndim == 1:
        return np.diff(indptr).astype(np.int64)
    return np.count_nonzero(data, axis=1).astype(np.int64)


def _chunks(rows: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Split a sequence of per-entity row counts into runs of about ``size`` rows."""
    cum = np.cumsum(rows)
    total = int(cum[-1]) if len(cum) else 0
    cuts = np.searchsorted(cum, np.arange(size, total, size))
    bounds = np.unique(np.concatenate([[0], cuts, [len(rows)]])).astype(np.int64)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def solve_entities(
    X: sp.csr_matrix | np.ndarray,
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
    prior: EntityPrior | None = None,
    variance: str = "none",
    variances: tuple[np.ndarray, np.ndarray] | None = None,
    max_iter: int = 50,
    tol: float = 1e-9,
    progress: object | None = None,
    task: str = "logistic",
) -> NewtonStats:
    """Solve the listed entities' regressions, updating ``coef``/``intercept`` in place.

    Parameters
    ----------
    X : csr_matrix or ndarray, shape (n_rows, d)
        Design of the coordinate's feature shard: CSR, or a dense block (float64 or
        float32, any memory order: a view of a table's columns is read in place).
    perm, starts : ndarray of int64
        Entity layout: entity ``e`` owns rows ``perm[starts[e]:starts[e+1]]``.
    y, sample_weight, offset : ndarray of float64, shape (n_rows,)
        Labels, weights and offsets (the other coordinates' scores) of every row.
    entities : ndarray of int64
        Entity codes to solve (others are left as they are).
    coef : ndarray of float64 or csr_matrix, shape (n_entities, d)
        Coefficients; read as the warm start, overwritten with the solution. A CSR matrix
        (sparse storage, for wide shards) is not changed: the new one is returned in
        ``NewtonStats.coef`` (and the variances in ``NewtonStats.variance``).
    intercept : ndarray of float64, shape (n_entities,)
        Intercepts; read as the warm start, overwritten.
    l2, intercept_l2 : float
        Prior precisions of the coefficients and of the intercept (without ``prior``).
    fit_intercept : bool
        Fit a per-entity intercept.
    prior : EntityPrior, optional
        Per-entity prior means and precisions, replacing ``l2``/``intercept_l2``.
    variance : {"none", "simple", "full"}
        Coefficient variances to compute: ``1/diag(H)`` or ``diag(H^-1)`` at the solution
        (``H``: Hessian of the objective). Written into ``variances``.
    variances : (ndarray (n_entities, d), ndarray (n_entities,)), optional
        Output arrays of the variances; required unless ``variance == "none"``.
    max_iter, tol : int, float
        Newton iteration limit; stop when ``max|grad| <= tol * max(1, sum of weights)``.
    progress : tqdm-like, optional
        Updated with the number of entities solved.
    task : {"logistic", "linear", "poisson"}
        The loss (:mod:`gdmix.losses`). The lockstep kernel is written for the logistic
        loss; the other tasks solve every entity with the subspace kernel.

    Returns
    -------
    NewtonStats
    """
    code = task_code(task)
    n_entities, d = coef.shape
    indptr, indices, data = design_arrays(X)
    var_mode = _VARIANCE_MODES[variance]
    dummy2, dummy1 = np.zeros((1, 1)), np.zeros(1)
    var, var_b = variances if variances is not None else (dummy2, dummy1)
    if var_mode and variances is None:
        raise ValueError("variance output arrays are required")
    sparse = sp.issparse(coef)
    if sparse:
        if prior is not None:
            raise ValueError("entity priors need dense coefficient storage")
        prev, prev_var = coef.tocsr(), var if var_mode else None
        entities = np.ascontiguousarray(entities, dtype=np.int64)
        row_nnz = _row_nonzeros(indptr, data)[perm]
        cum = np.concatenate([[0], np.cumsum(row_nnz)])
        bound = np.zeros(n_entities, dtype=np.int64)
        bound[entities] = np.minimum(d, cum[starts[1:]] - cum[starts[:-1]])[entities]
        slot_ptr = np.concatenate([[0], np.cumsum(bound)]).astype(np.int64)
        slots = (np.full(slot_ptr[-1], -1, dtype=np.int64), np.zeros(slot_ptr[-1]),
                 np.zeros(slot_ptr[-1] if var_mode else 1))  # fmt: skip
        storage = (d, True, prev.indptr.astype(np.int64), prev.indices.astype(np.int64),
                   prev.data, slot_ptr, *slots)  # fmt: skip
        coef, var = dummy2, dummy2
    else:
        none_i = np.zeros(1, dtype=np.int64)
        storage = (d, False, none_i, none_i, dummy1, none_i, none_i, dummy1, dummy1)
    if prior is not None:
        prior_args = (True, prior.mean, prior.intercept_mean, prior.precision,
                      prior.intercept_precision)  # fmt: skip
    else:
        prior_args = (False, dummy2, dummy1, dummy2, dummy1)
    common = (float(l2), float(intercept_l2), int(fit_intercept), *prior_args, coef, intercept,
              var_mode, var, var_b)  # fmt: skip
    entities = np.ascontiguousarray(entities, dtype=np.int64)
    counts = np.diff(starts)[entities]
    narrow = d <= LOCKSTEP_MAX_FEATURES and code == TASK_CODES["logistic"]
    lockstep = (counts <= LOCKSTEP_MAX_ROWS) if narrow else counts < 0
    n_iter = np.zeros(len(entities), dtype=np.int64)
    converged = np.zeros(len(entities), dtype=np.bool_)

    # Lockstep kernel: entities sorted by row count, so a group pads few rows.
    idx = np.flatnonzero(lockstep)
    idx = idx[np.argsort(counts[idx], kind="stable")]
    ents = entities[idx]
    it_part = np.zeros(len(ents), dtype=np.int64)
    ok_part = np.zeros(len(ents), dtype=np.bool_)
    for lo, hi in _chunks(counts[idx], _ROWS_PER_CALL):
        group_starts = np.append(np.arange(0, hi - lo, LANES), hi - lo).astype(np.int64)
        n_groups = len(group_starts) - 1
        block_starts = np.append(np.arange(0, n_groups, _GROUPS_PER_BLOCK), n_groups)
        kernel = solve_groups_par if _threaded(int(counts[idx][lo:hi].sum())) else solve_groups_ser
        kernel(indptr, indices, data, perm, starts, y, sample_weight, offset, ents[lo:hi],
               group_starts, block_starts.astype(np.int64), *common, int(max_iter), float(tol),
               it_part[lo:hi], ok_part[lo:hi])  # fmt: skip
        if progress is not None:
            progress.update(hi - lo)
    n_iter[idx], converged[idx] = it_part, ok_part

    # Subspace kernel: wide shards, big entities, and lockstep lanes that did not finish.
    retry = idx[~ok_part]
    n_new = int(np.count_nonzero(~lockstep))
    idx = np.concatenate([np.flatnonzero(~lockstep), retry])
    ents = entities[idx]
    it_part = np.zeros(len(ents), dtype=np.int64)
    ok_part = np.zeros(len(ents), dtype=np.bool_)
    for lo, hi in _chunks(counts[idx], _ROWS_PER_CALL):
        block_starts = np.append(np.arange(0, hi - lo, _ENTITIES_PER_BLOCK), hi - lo)
        kernel = solve_blocks_par if _threaded(int(counts[idx][lo:hi].sum())) else solve_blocks_ser
        kernel(indptr, indices, data, perm, starts, y, sample_weight, offset, ents[lo:hi],
               block_starts.astype(np.int64), *common, CG_MIN_FEATURES, int(max_iter),
               float(tol), it_part[lo:hi], ok_part[lo:hi], *storage, code)  # fmt: skip
        if progress is not None:
            progress.update(max(0, min(hi, n_new) - lo))  # retried entities were counted
    n_iter[idx] += it_part
    converged[idx] = ok_part
    stats = NewtonStats(
        n_solved=len(entities),
        n_converged=int(converged.sum()),
        mean_iter=float(n_iter.mean()) if len(n_iter) else 0.0,
        max_iter=int(n_iter.max()) if len(n_iter) else 0,
    )
    if sparse:
        stats.coef, stats.variance = _merge_slots(prev, prev_var, entities, bound, *slots,
                                                  with_var=bool(var_mode))  # fmt: skip
    return stats


def _merge_slots(
    prev: sp.csr_matrix,
    prev_var: sp.csr_matrix | None,
    solved: np.ndarray,
    bound: np.ndarray,
    slot_feat: np.ndarray,
    slot_val: np.ndarray,
    slot_var: np.ndarray,
    *,
    with_var: bool,
) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """New CSR coefficients: solved entities from their slots, the others unchanged.

    Explicit zeros are kept, so coefficients and variances share one sparsity pattern.
    """
    n, d = prev.shape
    keep = slot_feat >= 0
    owner = np.repeat(np.arange(n), bound)[keep]
    is_solved = np.zeros(n, dtype=bool)
    is_solved[solved] = True
    prev_owner = np.repeat(np.arange(n), np.diff(prev.indptr))
    old = ~is_solved[prev_owner]
    rows = np.concatenate([owner, prev_owner[old]])
    cols = np.concatenate([slot_feat[keep], prev.indices[old]])
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])

    def build(new: np.ndarray, before: np.ndarray) -> sp.csr_matrix:
        values = np.concatenate([new[keep], before[old]])[order]
        return sp.csr_matrix((values, cols[order], indptr), shape=(n, d))

    coef = build(slot_val, prev.data)
    var = None
    if with_var:
        before = prev_var.data if prev_var is not None else np.zeros(len(prev.data))
        var = build(slot_var, before)
    return coef, var


def _score_rows_py(indptr, indices, data, codes, coef, icpt, rows, scatter, out):
    n, d = len(codes), coef.shape[1]
    for i in prange(n):
        if i + PREFETCH_DISTANCE < n:  # a later row's entity: its coefficients on the way
            ahead = codes[i + PREFETCH_DISTANCE]
            if ahead >= 0:
                prefetch(coef, ahead * d)
                prefetch(coef, ahead * d + d - 1)
                prefetch(icpt, ahead)
        e = codes[i]
        acc = 0.0
        if e >= 0:
            acc = icpt[e]
            lo, hi = row_span(data, indptr, i)
            for k in range(lo, hi):
                acc += entry_value(data, i, k) * coef[e, entry_column(data, indices, k)]
        if scatter:
            out[rows[i]] = acc
        else:
            out[i] = acc


def _score_rows_sparse_py(indptr, indices, data, codes, cptr, cfeat, cval, icpt, rows, scatter,
                          out):  # fmt: skip
    for i in prange(len(codes)):
        e = codes[i]
        acc = 0.0
        if e >= 0:
            acc = icpt[e]
            r0, r1 = row_span(data, indptr, i)
            for k in range(r0, r1):
                v = entry_value(data, i, k)
                if skip_entry(data, v):
                    continue
                acc += v * coef_at(cptr, cfeat, cval, e, entry_column(data, indices, k))
        if scatter:
            out[rows[i]] = acc
        else:
            out[i] = acc


_score_rows_ser, _score_rows_par = serial_and_parallel(_score_rows_py)
_score_sparse_ser, _score_sparse_par = serial_and_parallel(_score_rows_sparse_py)


def score_entities(
    X: sp.csr_matrix | np.ndarray,
    codes: np.ndarray,
    coef: np.ndarray | sp.csr_matrix,
    intercept: np.ndarray,
    *,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Score rows: ``intercept[e] + x_i . coef[e]`` for row ``i`` of entity ``e = codes[i]``.

    A compiled gather and segment dot product over a CSR design or a dense block (any
    memory order). Rows whose code is negative (entity unseen in training, or without a
    model) score 0. With ``rows`` (a permutation), row ``i``'s score is written at
    ``rows[i]`` of the result (a design sorted by entity scored back into table order).
    """
    arrays = design_arrays(X)
    out = np.empty(X.shape[0]) if rows is None else empty_touched(X.shape[0])
    threaded = _threaded(X.shape[0])
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    scatter = rows is not None
    rows = _NO_INDEX if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    if scatter and len(rows) != len(codes):
        raise ValueError("rows must have one entry per design row")
    if sp.issparse(coef):
        coef = coef.tocsr()
        coef.sort_indices()
        kernel = _score_sparse_par if threaded else _score_sparse_ser
        kernel(*arrays, codes, coef.indptr.astype(np.int64),
               coef.indices.astype(np.int64), coef.data, intercept, rows, scatter,
               out)  # fmt: skip
    else:
        kernel = _score_rows_par if threaded else _score_rows_ser
        kernel(*arrays, codes, coef, intercept, rows, scatter, out)
    return out

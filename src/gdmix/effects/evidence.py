"""Maximising the Laplace approximation of a random effect's marginal likelihood over its
prior variances: the statistics (sums over entities), the steps, and what both engines
share (:mod:`gdmix.effects.prior_estimation` runs it in memory,
:mod:`gdmix.engines.dask_prior` bucket by bucket on a cluster).

In ``u_c = log p_c`` (``p_c = 1 / sigma_c^2``, component ``c``: the intercepts, the
slopes, or each slope) the approximation's gradient is ``G_c = (n_c - p_c S_c) / 2`` with
``S_c = sum_{e, j in c} (m_j^2 + V_jj + 2 (V g)_j m_j)`` (``m`` the posterior modes, ``V``
the inverse Hessians; see :mod:`gdmix.solvers.laplace`). The steps are Newton steps with
the curvature of the Gaussian approximation (exact for Gaussian data; for logistic
data it leaves out how the Hessians' weights move with the modes) plus a correction
learnt from successive gradients, taken on the variances ``sigma^2 = exp(-u)`` (where
the gradient is close to linear for small variances and saturates for large ones),
kept within a decade and the bounds; a step after which the approximation went down is
cut back to the maximum of the cubic through both ends. Where the curvature is not
negative definite, MacKay's fixed-point update of the evidence framework is the step.
Every statistic the steps need is a sum over entities (:class:`LaplaceSums`), so it adds
up across buckets.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from gdmix.solvers.laplace import LaplaceTerms, ModeCache, laplace_terms
from gdmix.solvers.newton import design_arrays

__all__ = [
    "VARIANCE_MAX",
    "VARIANCE_MIN",
    "EntityRows",
    "EvidenceMaximum",
    "LaplaceSums",
    "PriorEstimate",
    "PriorSetup",
    "component_map",
    "design_rows",
    "entity_rows",
    "entity_sums",
    "estimate_for",
    "make_estimate",
    "maximise_evidence",
    "precisions",
    "prior_setup",
    "settle",
    "staged_maximum",
    "subset_mask",
]

logger = logging.getLogger("gdmix")

#: Bounds of an estimated prior variance (l2 between 1e-4 and 1e6).
VARIANCE_MIN = 1e-6
VARIANCE_MAX = 1e4
_MAX_ITER = 50
_MAX_ITER_WARM = 4
_TOL = 1e-3  # change of a log variance (0.1 %)
#: A warm start stops within this share of its first step (how far the other
#: coordinates moved the optimum since the last pass): the next pass moves it again.
_TOL_MOVED = 0.2
_MAX_HALVINGS = 3
#: A warm start also stops when a step is within this share of every estimate's
#: standard error (from the approximation's curvature).
_SE_SHARE = 0.1
#: A cold start with at least this many entities first estimates on a quarter of them
#: (chosen by a stable hash of their ids, the same in every engine), to this tolerance:
#: the steps far from the optimum cost a quarter as much.
SUBSET_MIN_ENTITIES = 500
_SUBSET_TOL = 3e-2
_LOG10 = math.log(10.0)


@dataclass
class PriorEstimate:
    """Estimated prior variances of a random effect and how they were reached.

    Attributes
    ----------
    intercept_variance : float or None
        ``sigma_b^2`` (None when the intercept's prior was given, or there is none).
    slope_variance : float, list of float, or None
        ``sigma_w^2``, shared by every slope or one per feature (None when given).
    log_marginal : float
        The Laplace approximation of the log marginal likelihood at the estimate (with
        the other coordinates' scores as offset; constants dropped).
    trajectory : list of dict
        Every evaluation: the step that led to it (``start``, ``newton``,
        ``fixed_point`` or ``backtrack``), variances, log marginal.
    n_fits : int
        Evaluations (each a warm-started solve of every entity) it took.
    at_bound : list of str
        Components whose estimate stopped at a bound.
    """

    intercept_variance: float | None
    slope_variance: float | list[float] | None
    log_marginal: float
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    n_fits: int = 0
    at_bound: list[str] = field(default_factory=list)
    #: The solver's diagnostics of the last evaluation (at the estimate).
    diagnostics: dict[str, Any] = field(default_factory=dict)
    #: Whether the steps stopped moving (else the step budget of a warm start ran out).
    converged: bool = True
    #: A cold start's first stage, on a quarter of the entities (see ``staged_maximum``).
    subset_trajectory: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (history and manifest)."""
        return {
            "intercept_variance": self.intercept_variance,
            "slope_variance": self.slope_variance,
            "log_marginal": self.log_marginal,
            "n_fits": self.n_fits,
            "converged": self.converged,
            "at_bound": self.at_bound,
            "trajectory": self.trajectory,
            "subset_trajectory": self.subset_trajectory,
        }


@dataclass
class LaplaceSums:
    """An evaluation's statistics, summed over entities (they add up across buckets).

    Attributes
    ----------
    loss, logdet : float
        Data loss at the modes; ``sum log det H``.
    quad, log_prec : float
        ``sum p_j m_j^2`` and ``sum log p_j`` over every entity's slots.
    s, v, n : ndarray, shape (ncomp,)
        Per variance component: ``S_c`` (see the module's documentation), ``sum V_jj``
        and the number of slots.
    curvature : ndarray, shape (ncomp, ncomp)
        ``sum (m_j V_jl m_l + 1/2 V_jl^2)`` by pairs of components.
    rho_before, rho_after : float
        ``sum_i rho_i s_i`` at the incoming scores and at the modes.
    n_entities, n_converged, iter_sum, iter_max : int
        The Newton solves' diagnostics.
    """

    loss: float
    logdet: float
    quad: float
    log_prec: float
    s: np.ndarray
    v: np.ndarray
    n: np.ndarray
    curvature: np.ndarray
    rho_before: float = 0.0
    rho_after: float = 0.0
    n_entities: int = 0
    n_converged: int = 0
    iter_sum: int = 0
    iter_max: int = 0

    def __add__(self, other: LaplaceSums) -> LaplaceSums:
        return LaplaceSums(
            self.loss + other.loss, self.logdet + other.logdet, self.quad + other.quad,
            self.log_prec + other.log_prec, self.s + other.s, self.v + other.v,
            self.n + other.n, self.curvature + other.curvature,
            self.rho_before + other.rho_before, self.rho_after + other.rho_after,
            self.n_entities + other.n_entities, self.n_converged + other.n_converged,
            self.iter_sum + other.iter_sum, max(self.iter_max, other.iter_max),
        )  # fmt: skip

    def own_value(self) -> float:
        """This coordinate's Laplace approximation (constants dropped)."""
        return -self.loss - 0.5 * self.quad + 0.5 * self.log_prec - 0.5 * self.logdet

    def diagnostics(self, n_inactive: int = 0) -> dict[str, Any]:
        """The solver's diagnostics, as :meth:`RandomEffect.fit` reports them."""
        m = self.n_entities
        mean = self.iter_sum / m if m else 0.0
        return {"n_entities": m, "n_inactive": n_inactive, "n_converged": self.n_converged,
                "mean_iter": mean, "max_iter": self.iter_max}  # fmt: skip


def component_map(d: int, fit_intercept: bool, per_feature: bool) -> np.ndarray:
    """Variance component of every slot (the ``d`` slopes, then the intercept): one per
    slope with ``per_feature``, else one for all slopes; the intercept's is the last."""
    slopes = np.arange(d) if per_feature else np.zeros(d, dtype=np.int64)
    n_slope = (d if per_feature else 1) if d > 0 else 0
    tail = [n_slope] if fit_intercept else []
    return np.concatenate([slopes, tail]).astype(np.int64)


def entity_sums(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    perm: np.ndarray,
    starts: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    offset: np.ndarray,
    entities: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
    comp: np.ndarray,
    precision: np.ndarray,
    *,
    fit_intercept: bool,
    rho: np.ndarray | None = None,
    max_newton: int = 50,
    tol: float = 1e-9,
    cache: ModeCache | None = None,
) -> tuple[LaplaceSums, LaplaceTerms]:
    """Solve ``entities`` at the component precisions ``precision`` (warm-started from
    ``coef``/``intercept``, updated in place) and sum their Laplace statistics.

    Parameters
    ----------
    arrays, perm, starts, y, weight, offset
        The design and its rows, as for :func:`gdmix.solvers.laplace.laplace_terms`.
    entities : ndarray of int64
        The entities to solve.
    coef, intercept : ndarray
        Every entity's modes (C-ordered float64; updated in place).
    comp : ndarray of int64
        :func:`component_map`.
    precision : ndarray, shape (ncomp,)
        Prior precision of every component.
    fit_intercept : bool
        Whether the entities have an intercept.
    rho : ndarray, optional
        The other random effects' per-row derivative (see :func:`estimate_prior`).
    max_newton, tol
        Newton steps allowed and gradient tolerance of each entity's solve.
    cache : ModeCache, optional
        The data terms at the modes passed in (:class:`gdmix.solvers.laplace.ModeCache`).

    Returns
    -------
    (LaplaceSums, LaplaceTerms)
    """
    d = coef.shape[1]
    slot_prec = precision[comp]
    icpt = slot_prec[d : d + 1] if fit_intercept else np.ones(1)
    terms = laplace_terms(
        arrays, perm, starts, y, weight, offset, entities, coef, intercept,
        slot_prec[None, :d], icpt, fit_intercept=fit_intercept, rho=rho, comp=comp,
        max_newton=max_newton, tol=tol, cache=cache,
    )  # fmt: skip
    m, ncomp = len(entities), len(precision)
    modes = coef[entities]
    if fit_intercept:
        modes = np.column_stack([modes, intercept[entities]])
    m2 = (modes**2).sum(axis=0)
    vs = terms.variance.sum(axis=0)
    cs = terms.correction.sum(axis=0)

    def by_comp(values: np.ndarray) -> np.ndarray:
        return np.bincount(comp, weights=values, minlength=ncomp).astype(np.float64)

    assert terms.n_iter is not None and terms.converged is not None
    assert terms.rho_scores is not None and terms.curvature is not None
    sums = LaplaceSums(
        loss=float(terms.loss.sum()), logdet=float(terms.logdet.sum()),
        quad=float(slot_prec @ m2), log_prec=m * float(np.log(slot_prec).sum()),
        s=by_comp(m2 + vs + 2.0 * cs), v=by_comp(vs), n=by_comp(np.full(len(comp), float(m))),
        curvature=terms.curvature.reshape(ncomp, ncomp) if m else np.zeros((ncomp, ncomp)),
        rho_before=float(terms.rho_scores[:, 0].sum()),
        rho_after=float(terms.rho_scores[:, 1].sum()),
        n_entities=m, n_converged=int(terms.converged.sum()),
        iter_sum=int(terms.n_iter.sum()), iter_max=int(terms.n_iter.max()) if m else 0,
    )  # fmt: skip
    return sums, terms


class _Steps:
    """Steps in the log precisions ``u`` of the estimated components ``est``.

    Newton steps with the curvature of the Gaussian approximation plus a correction
    ``E`` learnt from the gradients of successive evaluations (Powell's symmetric
    Broyden update: the curvature the Gaussian approximation leaves out, that of the
    Hessians' weights moving with the modes, is what makes its steps fall short), else
    MacKay's fixed point; each kept within a decade and the bounds.
    """

    def __init__(self, est: np.ndarray, correction: np.ndarray | None = None) -> None:
        self.est = est
        m = len(est)
        ok = correction is not None and correction.shape == (m, m)
        self.correction = correction.copy() if ok else np.zeros((m, m))  # type: ignore[union-attr]
        self.last: tuple[np.ndarray, np.ndarray] | None = None  # (u, gradient)

    def gradient_curvature(
        self, precision: np.ndarray, sums: LaplaceSums
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gradient of the approximation in ``u`` and its Gaussian curvature."""
        est = self.est
        p, n, s = precision[est], sums.n[est], sums.s[est]
        grad = 0.5 * (n - p * s)
        hess = np.outer(p, p) * sums.curvature[np.ix_(est, est)] + np.diag(grad - 0.5 * n)
        return grad, 0.5 * (hess + hess.T)

    def learn(self, precision: np.ndarray, sums: LaplaceSums) -> None:
        """Take in an evaluation: update the correction from the gradient's change."""
        u = np.log(precision[self.est])
        grad, hess = self.gradient_curvature(precision, sums)
        if self.last is not None:
            step = u - self.last[0]
            ss = float(step @ step)
            if ss > 1e-20:
                w = (grad - self.last[1]) - (hess + self.correction) @ step
                self.correction += (np.outer(w, step) + np.outer(step, w)) / ss - (
                    float(w @ step) * np.outer(step, step) / ss**2
                )
        self.last = (u, grad)

    def step(self, precision: np.ndarray, sums: LaplaceSums) -> tuple[np.ndarray, str]:
        """The next step in ``u`` (from the last evaluation learnt) and its kind."""
        est = self.est
        p = precision[est]
        grad, hess = self.gradient_curvature(precision, sums)
        du, kind = None, "newton"
        for curvature in (hess + self.correction, hess):
            if _negative_definite(curvature):
                # Newton on the variances sigma^2 = exp(-u): the gradient is close to
                # linear in sigma^2 where the variance is small, and saturates where it
                # is large, so steps in sigma^2 neither fall short coming from large
                # variances nor run off coming from small ones.
                x = -np.linalg.solve(curvature, grad)
                du = -np.log(np.maximum(1.0 - x, 0.1))
                break
        if du is None:
            kind = "fixed_point"
            n, s, v = sums.n[est], sums.s[est], sums.v[est]
            gamma = n - p * v
            ok = (gamma > 1e-3 * n) & (s > v)
            new = np.where(ok, gamma / np.where(ok, s - v, 1.0), n / np.maximum(s, 1e-300))
            du = np.log(np.maximum(new, 1e-300)) - np.log(p)
        du = np.clip(du, -_LOG10, _LOG10)
        u = np.clip(np.log(p) + du, -math.log(VARIANCE_MAX), -math.log(VARIANCE_MIN))
        return u - np.log(p), kind


def _cubic_step(value: float, slope: float, new_value: float, new_slope: float) -> float:
    """Share of a step that went too far (the approximation went down): the maximum of
    the cubic through the values and slopes at both ends, within ``[0.1, 0.7]``."""
    f0, g0, f1, g1 = -value, -slope, -new_value, -new_slope  # minimise -log marginal
    theta = g0 + g1 - 3.0 * (f1 - f0)
    disc = theta * theta - g0 * g1
    if disc >= 0.0 and (g1 - g0 + 2.0 * math.sqrt(disc)) != 0.0:
        root = math.sqrt(disc)
        alpha = 1.0 - (g1 + root - theta) / (g1 - g0 + 2.0 * root)
    else:  # the parabola through f0, g0 and f1
        curv = f1 - f0 - g0
        alpha = -g0 / (2.0 * curv) if curv > 0 else 0.5
    return min(max(alpha, 0.1), 0.7) if math.isfinite(alpha) else 0.5


def _negative_definite(matrix: np.ndarray) -> bool:
    try:
        return bool(np.all(np.linalg.eigvalsh(matrix) < 0))
    except np.linalg.LinAlgError:
        return False


@dataclass
class EvidenceMaximum:
    """What :func:`maximise_evidence` returns.

    Attributes
    ----------
    precision : ndarray
        The component precisions of the last evaluation (where the coordinate is left).
    trajectory : list of dict
        Every evaluation (see :class:`PriorEstimate`).
    converged : bool
        Whether the last step was below the tolerance.
    sums : LaplaceSums
        The last evaluation's statistics.
    log_marginal : float
        The approximation there.
    correction : ndarray
        The learnt curvature correction (a warm start's starting point).
    step : ndarray
        The step proposed at the last evaluation (not taken).
    """

    precision: np.ndarray
    trajectory: list[dict[str, Any]]
    converged: bool
    sums: LaplaceSums
    log_marginal: float
    correction: np.ndarray
    step: np.ndarray


def maximise_evidence(
    evaluate: Callable[[np.ndarray], LaplaceSums],
    setup: PriorSetup,
    *,
    other_value: float = 0.0,
    correction: np.ndarray | None = None,
    previous_step: np.ndarray | None = None,
    tol: float | None = None,
    shift: np.ndarray | None = None,
    within_se: bool = False,
) -> EvidenceMaximum:
    """Maximise the Laplace approximation over the estimated components' precisions.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(precision)`` moves every entity to its mode at the component
        precisions ``precision`` and returns their summed statistics (the coordinate is
        left at the last precisions evaluated).
    setup : PriorSetup
        The starting precisions (those not estimated stay as given), which are
        estimated, and whether the start is an earlier pass's estimate (``warm``: at most
        ``_MAX_ITER_WARM`` evaluations).
    other_value : float
        The other random effects' share of the approximation at the starting scores
        (carried to first order in this coordinate's scores).
    correction : ndarray, optional
        A curvature correction learnt by an earlier call (:class:`EvidenceMaximum`).
    previous_step : ndarray, optional
        The step an earlier call proposed last: with ``warm``, the tolerance grows with
        how far the optimum has moved since (a warm start stops within ``_TOL_MOVED`` of
        that distance, never before ``_TOL`` when nothing moved).
    tol : float, optional
        Stop when a step changes no log variance by more than this (default ``_TOL``).
    shift : ndarray, optional
        How far (in log precisions) the start was moved from the previous estimate.
    within_se : bool
        Also stop when a step is within ``_SE_SHARE`` of every estimate's standard error
        (always so with ``warm``).

    Returns
    -------
    EvidenceMaximum
    """
    warm, estimated = setup.warm, setup.estimated
    precision = setup.precision
    limit = _MAX_ITER_WARM if warm else _MAX_ITER
    tol = _TOL if tol is None else tol
    trajectory: list[dict[str, Any]] = []
    precision = np.asarray(precision, dtype=np.float64).copy()
    steps = _Steps(estimated, correction)
    base: float | None = None

    def run(prec: np.ndarray, kind: str) -> tuple[LaplaceSums, float]:
        nonlocal base
        sums = evaluate(prec)
        steps.learn(prec, sums)
        if base is None:
            base = other_value - sums.rho_before
        value = sums.own_value() + base + sums.rho_after
        trajectory.append({"step": kind, **variances(prec, setup), "log_marginal": value})
        return sums, value

    sums, value = run(precision, "start")
    du, kind = steps.step(precision, sums)
    if warm and previous_step is not None and previous_step.shape == du.shape:
        # The other coordinates moved the optimum by about shift + du - previous_step
        # since the last update: a share of that is precise enough (the next pass moves
        # it again).
        shift = np.zeros_like(du) if shift is None else shift
        moved = float(np.max(np.abs(shift + du - previous_step), initial=0.0))
        tol = max(tol, _TOL_MOVED * moved)

    def small(du: np.ndarray) -> bool:
        if float(np.max(np.abs(du), initial=0.0)) < tol:
            return True
        if not (warm or within_se):
            return False
        # A later pass, or many entities: a step within a tenth of the estimate's
        # standard error changes nothing that matters (and a next pass revisits it).
        curv = -np.diag(steps.gradient_curvature(precision, sums)[1])
        se = 1.0 / np.sqrt(np.maximum(curv, 1e-12))
        return bool(np.all(np.abs(du) < _SE_SHARE * se))

    converged = small(du)
    while not converged and len(trajectory) < limit:
        slope = float(steps.gradient_curvature(precision, sums)[0] @ du)
        for backtrack in range(_MAX_HALVINGS + 1):
            trial = precision.copy()
            trial[estimated] *= np.exp(du)
            new_sums, new_value = run(trial, kind if backtrack == 0 else "backtrack")
            if new_value >= value or backtrack == _MAX_HALVINGS or len(trajectory) >= limit:
                break
            new_slope = float(steps.gradient_curvature(trial, new_sums)[0] @ du)
            du = _cubic_step(value, slope, new_value, new_slope) * du
            slope = float(steps.gradient_curvature(precision, sums)[0] @ du)
        precision, sums, value = trial, new_sums, new_value
        du, kind = steps.step(precision, sums)
        converged = small(du)
    return EvidenceMaximum(precision, trajectory, converged, sums, value, steps.correction, du)


def subset_mask(ids: Any) -> np.ndarray:
    """The quarter of the entities ``ids`` a cold start first estimates on (a stable hash
    of the ids: the same entities on every engine and bucket)."""
    from gdmix.engines.buckets import entity_buckets

    return entity_buckets(np.asarray(ids), 1000) < 250


def staged_maximum(
    evaluate: Callable[[np.ndarray, bool], LaplaceSums],
    setup: PriorSetup,
    n_entities: int,
    **options: Any,
) -> tuple[EvidenceMaximum, list[dict[str, Any]]]:
    """:func:`maximise_evidence`, after a first pass on a quarter of the entities when the
    start is cold and there are at least ``SUBSET_MIN_ENTITIES`` of them.

    ``evaluate(precision, subset)`` evaluates the quarter (``subset``) or every entity.
    Returns the maximum and the first stage's trajectory (empty without one).
    """
    first: list[dict[str, Any]] = []
    if not setup.warm and n_entities >= SUBSET_MIN_ENTITIES:
        sub = maximise_evidence(lambda p: evaluate(p, True), setup, tol=_SUBSET_TOL,
                                other_value=options.get("other_value", 0.0))  # fmt: skip
        first = sub.trajectory
        setup = dataclasses.replace(setup, precision=sub.precision)
        options["within_se"] = True  # with this many entities the standard errors are small
    return maximise_evidence(lambda p: evaluate(p, False), setup, **options), first


def estimate_for(
    coord: Any,
    evaluate: Callable[[np.ndarray, bool], LaplaceSums],
    setup: PriorSetup,
    n_entities: int,
    other_value: float = 0.0,
) -> tuple[EvidenceMaximum, list[dict[str, Any]]]:
    """:func:`staged_maximum` for ``coord``, with what its earlier updates learnt (kept on
    the coordinate: the curvature correction, the last step, the last estimates).

    A warm start is moved ahead along the estimates' path: coordinate descent converges
    about geometrically, so after estimates ``u1, u2, u3`` the next is near ``u3 + r (u3
    - u2)``, ``r`` the ratio of the last two moves (within ``[0, 0.7]``; 0.3 with only
    two estimates).
    """
    history = [
        h for h in getattr(coord, "evidence_history", []) if h.shape == setup.estimated.shape
    ]
    shift = None
    if setup.warm and len(history) >= 2:
        d1 = history[-1] - history[-2]
        ratio = np.full(len(d1), 0.3)
        if len(history) >= 3:
            d0 = history[-2] - history[-3]
            ok = np.abs(d0) > 1e-12
            ratio = np.where(ok, d1 / np.where(ok, d0, 1.0), 0.0)
        shift = np.clip(ratio, 0.0, 0.7) * d1
        precision = setup.precision.copy()
        precision[setup.estimated] *= np.exp(shift)
        setup = dataclasses.replace(setup, precision=precision)
    best, first = staged_maximum(
        evaluate, setup, n_entities, other_value=other_value, shift=shift,
        correction=getattr(coord, "evidence_correction", None),
        previous_step=getattr(coord, "evidence_step", None),
    )  # fmt: skip
    coord.evidence_correction, coord.evidence_step = best.correction, best.step
    coord.evidence_history = [*history[-2:], np.log(best.precision[setup.estimated])]
    return best, first


def design_rows(
    design: Any, y: np.ndarray, weight: np.ndarray, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, weights (down-sampling included) and offsets of a training design's rows,
    in the design's row order, as contiguous float64 (what the compiled passes read)."""
    if design.order is not None:
        y, weight, offset = y[design.order], weight[design.order], offset[design.order]
    if design.weight_multiplier is not None:
        weight = weight * design.weight_multiplier
    return tuple(np.ascontiguousarray(v, dtype=np.float64) for v in (y, weight, offset))  # type: ignore[return-value]


@dataclass
class EntityRows:
    """A training design's fitting rows in entity order, contiguous in memory (what the
    compiled pass reads: every evaluation walks each entity's rows several times).

    A dense block is kept in table order and read through ``perm``, which scatters an
    entity's rows over the block (one cache line per value of a column-ordered block);
    here its rows are gathered once into a C-ordered block, or CSR where that is smaller
    (a CSR design's rows into CSR), so the pass reads the same values in the same order
    (the same results) from contiguous memory.

    Attributes
    ----------
    arrays : tuple
        ``(indptr, indices, data)`` of the rows (:func:`gdmix.solvers.newton.design_arrays`).
    perm, starts : ndarray of int64
        Entity ``e`` owns rows ``perm[starts[e]:starts[e+1]]`` (``perm`` is ``0..n-1``
        when the rows were gathered).
    take : ndarray of int64 or None
        The design row of every row here (None: the design's rows as they are).
    n_design : int
        Rows of the design.
    """

    arrays: tuple[np.ndarray, np.ndarray, np.ndarray]
    perm: np.ndarray
    starts: np.ndarray
    take: np.ndarray | None
    n_design: int

    def gather(self, *values: np.ndarray | None) -> tuple[Any, ...]:
        """Per-design-row ``values`` (labels, weights, offsets, ``rho``) in this order."""
        if self.take is None:
            return values
        return tuple(None if v is None else np.ascontiguousarray(v[self.take]) for v in values)

    def scatter(self, terms: np.ndarray) -> np.ndarray:
        """Per-row ``terms`` of these rows back in design-row order (0 for rows left out)."""
        if self.take is None:
            return terms
        out = np.zeros(self.n_design)
        out[self.take] = terms
        return out


def entity_rows(design: Any) -> EntityRows:
    """:class:`EntityRows` of a training design (its ``X``, ``perm`` and ``starts``)."""
    X, perm = design.X, np.asarray(design.perm, dtype=np.int64)
    starts = np.ascontiguousarray(design.starts, dtype=np.int64)
    n = X.shape[0]
    if sp.issparse(X) and len(perm) == n and np.array_equal(perm, np.arange(n)):
        return EntityRows(design_arrays(X), perm, starts, None, n)
    if sp.issparse(X):
        rows = X.tocsr()[perm]
    else:
        # One C-ordered copy, each row's values contiguous; as CSR when that is smaller
        # (12 bytes a non-zero against 8 a value), as it then also is faster: the pass
        # does not read the zeros it would skip.
        rows = np.ascontiguousarray(np.take(np.asarray(X), perm, axis=0))
        if 12 * np.count_nonzero(rows) < 8 * rows.size:
            rows = sp.csr_matrix(rows)
    return EntityRows(design_arrays(rows), np.arange(len(perm), dtype=np.int64), starts, perm, n)


@dataclass
class PriorSetup:
    """What a coordinate's estimation starts from (:func:`prior_setup`).

    Attributes
    ----------
    components : list of str
        What is estimated: ``"intercept"`` and/or ``"slope"`` (empty: nothing).
    fixed : dict
        The given precisions: ``l2`` and ``intercept_l2``.
    per_feature : bool
        One slope variance per feature.
    warm : bool
        The start is an earlier pass's estimate.
    comp : ndarray of int64
        :func:`component_map`.
    precision : ndarray
        Every component's starting precision.
    estimated : ndarray of int64
        The components estimated.
    d : int
        The coordinate's number of features.
    """

    components: list[str]
    fixed: dict[str, Any]
    per_feature: bool
    warm: bool
    comp: np.ndarray
    precision: np.ndarray
    estimated: np.ndarray
    d: int


def prior_setup(coord: Any, params: dict[str, Any]) -> PriorSetup:
    """The estimation's starting point for a random effect fitted with ``params`` (``l2``
    and/or ``intercept_l2`` ``"auto"``): the previous pass's estimate when there is one
    (``coord.estimated_params``), else variances of 1."""
    per_feature = coord.config.prior == "per_feature"
    d = coord.coef.shape[1]
    fit_b = bool(coord.config.intercept)
    previous = getattr(coord, "estimated_params", None) or {}
    fixed: dict[str, Any] = {}
    components = []
    if params.get("intercept_l2") == "auto" and fit_b:
        components.append("intercept")
    elif params.get("intercept_l2") not in (None, "auto"):
        fixed["intercept_l2"] = float(params["intercept_l2"])
    if params.get("l2") == "auto" and d > 0:
        components.append("slope")
    elif params.get("l2") != "auto":
        fixed["l2"] = float(params["l2"])
    fixed.setdefault("l2", 1.0)  # no slopes: any value
    fixed.setdefault("intercept_l2", fixed["l2"])
    start: dict[str, Any] = {}
    if "intercept" in components:
        start["intercept"] = 1.0 / previous["intercept_l2"] if previous else 1.0
    if "slope" in components:
        if previous:
            inv = 1.0 / np.asarray(previous["l2"], dtype=np.float64)
            start["slope"] = (
                [float(v) for v in np.broadcast_to(inv, (d,))]
                if per_feature
                else float(np.mean(inv))
            )
        else:
            start["slope"] = [1.0] * d if per_feature else 1.0
    comp = component_map(d, fit_b, per_feature)
    precision, estimated = start_precisions(d, fit_b, per_feature, components, start, fixed)
    return PriorSetup(components, fixed, per_feature, bool(previous), comp, precision, estimated,
                      d)  # fmt: skip


def start_precisions(
    d: int, fit_b: bool, per_feature: bool, components: list[str], start: dict[str, Any],
    fixed: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Every component's starting precision, and the indices of those estimated."""
    n_slope = (d if per_feature else 1) if d > 0 else 0
    precision = np.ones(n_slope + int(fit_b))
    estimated: list[int] = []
    if n_slope:
        given = start["slope"] if "slope" in components else 1.0 / np.asarray(fixed["l2"], float)
        precision[:n_slope] = 1.0 / np.broadcast_to(np.asarray(given, float), (n_slope,))
        if "slope" in components:
            estimated += range(n_slope)
    if fit_b:
        if "intercept" in components:
            precision[n_slope] = 1.0 / float(start["intercept"])
            estimated.append(n_slope)
        else:
            precision[n_slope] = float(fixed["intercept_l2"])
    return precision, np.asarray(estimated, dtype=np.int64)


def variances(precision: np.ndarray, setup: PriorSetup) -> dict[str, Any]:
    """The estimated components' variances: ``slope_variance`` and/or
    ``intercept_variance`` (floats, or a list with one per feature)."""
    out: dict[str, Any] = {}
    comp, d = setup.comp, setup.d
    if "intercept" in setup.components:
        out["intercept_variance"] = 1.0 / float(precision[comp[d]])
    if "slope" in setup.components:
        v = 1.0 / precision[comp[:d]]
        out["slope_variance"] = [float(x) for x in v] if setup.per_feature else float(v[0])
    return out


def settle(
    coord: Any, precision: np.ndarray, setup: PriorSetup, variance: np.ndarray | None,
    entities: np.ndarray,
) -> None:  # fmt: skip
    """Leave the coordinate as a fit at ``precision`` leaves it: its params and the
    posterior variances ``variance`` (``(m, k)``: slopes, then the intercept) of
    ``entities`` (the modes are already in place)."""
    d = coord.coef.shape[1]
    slot = precision[setup.comp]
    l2: float | list[float] = (
        [float(v) for v in slot[:d]] if setup.per_feature else float(slot[0]) if d > 0
        else float(setup.fixed["l2"])
    )  # fmt: skip
    icpt = float(slot[d]) if coord.config.intercept else float(setup.fixed["intercept_l2"])
    coord.params = {"l2": l2, "intercept_l2": icpt}
    if variance is not None:
        if coord.variance is not None and not sp.issparse(coord.variance):
            coord.variance[entities] = variance[:, :d]
        if coord.intercept_variance is not None and coord.config.intercept:
            coord.intercept_variance[entities] = variance[:, d]
    coord.fitted = True


def make_estimate(
    name: str, setup: PriorSetup, best: EvidenceMaximum, n_inactive: int = 0,
    subset: list[dict[str, Any]] | None = None,
) -> PriorEstimate:  # fmt: skip
    """The :class:`PriorEstimate` of ``best``, with a warning for components at a bound."""
    var = variances(best.precision, setup)
    at_bound = [
        key for key, value in var.items()
        if any(not VARIANCE_MIN * 1.01 < v < VARIANCE_MAX / 1.01 for v in np.atleast_1d(value))
    ]  # fmt: skip
    if at_bound:
        logger.warning(
            "coordinate '%s': the estimated %s stopped at a bound (%g or %g): no "
            "between-entity variance, or entities whose labels separate; the estimate is "
            "kept finite",
            name, ", ".join(at_bound), VARIANCE_MIN, VARIANCE_MAX,
        )  # fmt: skip
    return PriorEstimate(
        intercept_variance=var.get("intercept_variance"),
        slope_variance=var.get("slope_variance"),
        log_marginal=best.log_marginal,
        trajectory=best.trajectory,
        n_fits=len(best.trajectory) + len(subset or []),
        at_bound=at_bound,
        diagnostics=best.sums.diagnostics(n_inactive),
        converged=best.converged,
        subset_trajectory=list(subset or []),
    )


def kept_prior(base: dict[str, Any]) -> dict[str, Any]:
    """The history's ``prior`` of an incremental refresh, which keeps the previous
    model's estimate ``base`` (its params)."""
    return {"kept_from": "init_model", "l2": base["l2"], "intercept_l2": base.get("intercept_l2")}


def precisions(coord: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every entity's prior precisions: slopes ``(n, d)`` and intercepts ``(n,)`` (the
    previous model's posterior in incremental training), or the coordinate's ``l2`` as
    one row ``(1, d)`` and ``(1,)`` shared by every entity."""
    prior = coord._prior(coord.l2_vector(), coord.intercept_l2)
    if prior is not None:
        return prior.precision, prior.intercept_precision
    return coord.l2_vector()[None, :], np.full(1, coord.intercept_l2)

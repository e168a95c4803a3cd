"""Automatic regularisation: a random effect's prior variances estimated from the data.

A random effect's ``l2`` is the inverse of its prior variance: ``w_e ~ N(0, sigma_w^2)``
for every slope and ``b_e ~ N(0, sigma_b^2)`` for the intercept. Mixed-model software
(lme4's ``glmer``) estimates those variances by maximising the Laplace approximation of
the marginal likelihood; :func:`estimate_prior` does the same, with the other
coordinates' scores as a fixed offset (inside coordinate descent, at every update of the
coordinate).

How: see :mod:`gdmix.effects.evidence` (the steps, shared with the Dask engine).

Every evaluation is one compiled pass over the entities
(:func:`gdmix.solvers.laplace.laplace_terms`): each entity's damped Newton steps to its
mode at the new precisions, warm-started from the previous mode, and the Laplace terms
from the same Hessian and Cholesky factor. The statistics the steps need are sums over
entities, so they add up across buckets: the Dask engine computes them bucket by bucket
on its workers (:mod:`gdmix.engines.dask_prior`). The coordinate is left at the modes
and posterior variances of the last evaluation (at the solver's tolerance): no separate
fit follows.

With several random effects, the gradient also counts how the other random effects'
Hessians move with this one's scores (the block-diagonal Laplace approximation of the
whole model, the other coordinates' modes held fixed): their per-row derivative ``rho``
is taken once per update, at the scores the update starts from, and their share of the
approximation is carried to first order in this coordinate's scores.

Variances are kept in ``[VARIANCE_MIN, VARIANCE_MAX]``; an estimate at a bound (no
between-entity variance, or separable entities) is logged as a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from gdmix.effects.evidence import (
    VARIANCE_MAX,
    VARIANCE_MIN,
    EntityRows,
    EvidenceMaximum,
    LaplaceSums,
    PriorEstimate,
    PriorSetup,
    design_rows,
    entity_rows,
    entity_sums,
    estimate_for,
    kept_prior,
    make_estimate,
    precisions,
    prior_setup,
    settle,
    subset_mask,
)
from gdmix.errors import ConfigError
from gdmix.solvers.laplace import LaplaceTerms, ModeCache, laplace_terms

__all__ = [
    "VARIANCE_MAX",
    "VARIANCE_MIN",
    "EvidenceMaximum",
    "LaplaceSums",
    "PriorEstimate",
    "estimate_prior",
    "fit_with_estimated_prior",
    "others_terms",
]


def estimate_prior(
    coord: Any,
    design: Any,
    y: np.ndarray,
    weight: np.ndarray,
    offset: np.ndarray,
    setup: PriorSetup,
    *,
    others: Callable[[np.ndarray], tuple[np.ndarray, float]] | None = None,
) -> PriorEstimate:
    """Estimate a random effect's prior variances by maximising the Laplace approximation,
    and leave the coordinate fitted at the estimate (modes and posterior variances).

    Parameters
    ----------
    coord : RandomEffect
        The coordinate (built, with dense coefficients).
    design, y, weight, offset
        Its training design, labels, weights and offsets (the other coordinates' scores).
    setup : PriorSetup
        What to estimate and where to start (:func:`gdmix.effects.evidence.prior_setup`).
    others : callable, optional
        ``others(scores) -> (rho, value)``: the other random effects' ``-1/2 h'_i q_i``
        per table row and their share of the approximation (``-1/2 sum log det``) when
        this coordinate scores ``scores`` (:func:`others_terms`). With it, the
        approximation maximised is the block-diagonal Laplace approximation of the whole
        model, the other coordinates' modes held fixed.

    Returns
    -------
    PriorEstimate

    Raises
    ------
    ConfigError
        When the shard is too wide for dense per-entity Hessians.
    """
    if sp.issparse(coord.coef):
        raise ConfigError(
            f"coordinate '{coord.name}': 'l2: auto' needs a dense shard (at most 256 features); "
            "search l2 on validation data for wide shards"
        )
    fit_b = bool(coord.config.intercept)
    rows = _entity_rows(design)
    entities = np.flatnonzero(coord.trainable).astype(np.int64)
    rho, other_value = None, 0.0
    if others is not None:
        rho_table, other_value = others(coord.score(design))
        rho = rho_table if design.order is None else rho_table[design.order]
    yy, ww, oo, rho = rows.gather(*design_rows(design, y, weight, offset), rho)
    last: list[LaplaceTerms] = []
    subset = entities[subset_mask(coord.entity_ids[entities])]
    # The offsets and rho stay put during the update: each evaluation resumes from the
    # data terms the last one left at the modes.
    cache = ModeCache.make(coord.coef.shape[0], coord.coef.shape[1] + int(fit_b))

    def evaluate(prec: np.ndarray, on_subset: bool) -> LaplaceSums:
        sums, terms = entity_sums(
            rows.arrays, rows.perm, rows.starts, yy, ww, oo, subset if on_subset else entities,
            coord.coef, coord.intercept, setup.comp, prec, fit_intercept=fit_b, rho=rho,
            max_newton=coord.config.max_iter, tol=coord.config.tol, cache=cache,
        )  # fmt: skip
        last[:] = [terms]
        return sums

    threads = numba.get_num_threads()
    if coord.n_threads is not None:
        numba.set_num_threads(min(coord.n_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        best, first = estimate_for(coord, evaluate, setup, len(entities), other_value)
    finally:
        numba.set_num_threads(threads)
    if last:  # what another random effect's estimation needs of this one (its rho)
        coord.evidence_rows = (rows.scatter(last[0].row_terms), float(last[0].logdet.sum()))
    settle(coord, best.precision, setup, last[0].variance if last else None, entities)
    coord.train_coverage = coord.coverage(design)
    return make_estimate(coord.name, setup, best, int((~coord.has_model).sum()), first)


def fit_with_estimated_prior(
    coord: Any,
    design: Any,
    y: np.ndarray,
    weight: np.ndarray,
    offset: np.ndarray,
    params: dict[str, Any],
    *,
    others: Callable[[np.ndarray], tuple[np.ndarray, float]] | None = None,
) -> dict[str, Any]:
    """Fit a random effect whose ``l2`` and/or ``intercept_l2`` is ``"auto"``.

    The variances are estimated (:func:`estimate_prior`, starting from the previous
    pass's estimate when there is one) and the coordinate is left fitted at the estimate.
    In incremental training the previous model's estimate is kept: known entities have
    their previous posterior as prior, and new ones the estimated variance.

    Returns
    -------
    dict
        The solver's diagnostics of the final fit, with ``prior`` (see
        :meth:`PriorEstimate.to_dict`).
    """
    setup = prior_setup(coord, params)
    fixed = setup.fixed

    def fit(p: dict[str, Any]) -> dict[str, Any]:
        return coord.fit(design, y, weight, offset,
                         l2=p.get("l2", fixed["l2"]),
                         intercept_l2=p.get("intercept_l2", fixed["intercept_l2"]))  # fmt: skip

    coord.evidence_rows = None  # until an estimate leaves new ones
    base = getattr(coord, "base_params", None)
    if coord._prior_base is not None and base:  # incremental: keep the previous estimate
        diag = fit({"l2": base["l2"], "intercept_l2": base.get("intercept_l2")})
        diag["prior"] = kept_prior(base)
        coord.estimated_params = dict(coord.params)
        return diag
    if not setup.components:
        return fit({})
    estimate = estimate_prior(coord, design, y, weight, offset, setup, others=others)
    diag = dict(estimate.diagnostics)  # its last evaluation left the coordinate at the estimate
    diag["prior"] = estimate.to_dict()
    coord.estimated_params = dict(coord.params)
    return diag


def others_terms(
    coords: list[Any],
    designs: dict[str, Any],
    y: np.ndarray,
    weight: np.ndarray,
    base: np.ndarray,
    scores: dict[str, np.ndarray],
    name: str,
) -> Callable[[np.ndarray], tuple[np.ndarray, float]] | None:
    """The other random effects' part of the Laplace approximation, as a function of
    ``name``'s training scores: ``(rho, value)`` with ``rho`` their ``-1/2 h'_i q_i`` per
    table row (summed) and ``value`` their ``-1/2 sum log det H`` (see
    :func:`estimate_prior`).

    ``base`` is the table's offset plus every coordinate's current score but ``name``'s
    (the offsets ``name`` is fitted against) and ``scores`` every coordinate's current
    training scores; only fitted random effects with dense coefficients and a training
    design take part.
    """
    others = [c for c in coords if c.name != name and _dense_random(c, designs.get(c.name))]
    if not others:
        return None

    def share(mine: np.ndarray) -> tuple[np.ndarray, float]:
        rho = np.zeros(len(base))
        value = 0.0
        for c in others:
            design = designs[c.name]
            cached = getattr(c, "evidence_rows", None)
            if cached is not None and len(cached[0]) == len(design.perm):
                # An estimated coordinate's terms at its last evaluation (the same as now
                # when no coordinate moved since; coordinate descent converges to the
                # same point either way).
                rows, logdet = cached
            else:
                off = base + mine - scores[c.name]
                layout = _entity_rows(design)
                yy, ww, oo = layout.gather(*design_rows(design, y, weight, off))
                prec, prec_b = precisions(c)
                entities = np.flatnonzero(c.trainable).astype(np.int64)
                terms = laplace_terms(
                    layout.arrays, layout.perm, layout.starts, yy, ww, oo,
                    entities, c.coef, c.intercept, prec, prec_b,
                    fit_intercept=bool(c.config.intercept),
                )  # fmt: skip
                rows, logdet = layout.scatter(terms.row_terms), float(terms.logdet.sum())
            if design.order is None:
                rho += rows
            else:
                rho[design.order] += rows
            value -= 0.5 * logdet
        return rho, value

    return share


def _entity_rows(design: Any) -> EntityRows:
    """The design's rows in entity order, built once and kept with the design."""
    if design.rows_by_entity is None:
        design.rows_by_entity = entity_rows(design)
    return design.rows_by_entity


def _dense_random(coord: Any, design: Any) -> bool:
    return (
        coord.kind == "random"
        and coord.fitted
        and not sp.issparse(coord.coef)
        and design is not None
        and getattr(design, "perm", None) is not None
    )

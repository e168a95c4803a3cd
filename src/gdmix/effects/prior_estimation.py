"""Automatic regularisation: a random effect's prior variances estimated from the data.

A random effect's ``l2`` is the inverse of its prior variance: ``w_e ~ N(0, sigma_w^2)``
for every slope and ``b_e ~ N(0, sigma_b^2)`` for the intercept. Mixed-model software
(lme4's ``glmer``) estimates those variances by maximising the Laplace approximation of
the marginal likelihood; :func:`estimate_prior` does the same, with the other
coordinates' scores as a fixed offset (inside coordinate descent, at every update of the
coordinate).

The approximation's gradient in a prior precision is available in closed form (see
:mod:`gdmix.solvers.laplace`), modes moving with the prior included; setting it to zero
gives, for each variance component ``c`` (the intercepts, the slopes, or each slope)::

    sigma_c^2 = sum_{e, j in c} (m_j^2 + 2 (V g)_j m_j) / sum_{e, j in c} (1 - V_jj / sigma_c^2)

(``m`` the posterior modes, ``V`` the inverse Hessians): MacKay's fixed-point update of
the evidence framework, with a correction for how the modes move. It is iterated, each
iteration a warm-started solve of every entity and one compiled pass for ``V``, ``g`` and
the log determinants; a previous pass's estimate is the starting point of the next. With
several random effects, the gradient also counts how the other random effects'
Hessians move with this one's scores (the block-diagonal Laplace approximation of the
whole model, the other coordinates' modes held fixed).

Variances are kept in ``[VARIANCE_MIN, VARIANCE_MAX]``; an estimate at a bound (no
between-entity variance, or separable entities) is logged as a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from gdmix.errors import ConfigError
from gdmix.solvers.laplace import LaplaceTerms, laplace_terms
from gdmix.solvers.newton import design_arrays

__all__ = [
    "VARIANCE_MAX",
    "VARIANCE_MIN",
    "PriorEstimate",
    "estimate_prior",
    "fit_with_estimated_prior",
    "others_terms",
]

logger = logging.getLogger("gdmix")

#: Bounds of an estimated prior variance (l2 between 1e-4 and 1e6).
VARIANCE_MIN = 1e-6
VARIANCE_MAX = 1e4
_MAX_ITER = 50
_MAX_ITER_WARM = 4
_TOL = 1e-3  # relative change of a variance (0.1 %)


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
        Every step: stage (``fixed_point`` or ``refine``), variances, log marginal.
    n_fits : int
        Solves of every entity it took.
    at_bound : list of str
        Components whose estimate stopped at a bound.
    """

    intercept_variance: float | None
    slope_variance: float | list[float] | None
    log_marginal: float
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    n_fits: int = 0
    at_bound: list[str] = field(default_factory=list)
    #: The solver's diagnostics of the last fit (at the estimate).
    diagnostics: dict[str, Any] = field(default_factory=dict)
    #: Whether the steps stopped moving (else the step budget of a warm start ran out).
    converged: bool = True

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
        }


class _Problem:
    """One coordinate's estimation: its design, data, and a fit at given variances."""

    def __init__(
        self,
        coord: Any,
        design: Any,
        y: np.ndarray,
        weight: np.ndarray,
        offset: np.ndarray,
        fit: Callable[[dict[str, Any]], dict[str, Any]],
        per_feature: bool,
        others: Callable[[np.ndarray], tuple[np.ndarray, float]] | None = None,
    ) -> None:
        self.coord, self.design, self.fit_fn, self.others = coord, design, fit, others
        self.per_feature = per_feature
        self.y, self.w, self.o = _design_rows(design, y, weight, offset)
        self.arrays = design_arrays(design.X)
        self.entities = np.flatnonzero(coord.trainable).astype(np.int64)
        self.d = coord.coef.shape[1]
        self.fit_b = bool(coord.config.intercept)
        self.n_fits = 0
        self.last_diag: dict[str, Any] = {}
        self.rho: np.ndarray | None = None
        self.other_value = 0.0

    def params(self, var: dict[str, Any]) -> dict[str, Any]:
        """Fit parameters (precisions) of the variances ``var``."""
        out: dict[str, Any] = {}
        if "slope" in var:
            s = var["slope"]
            out["l2"] = (1.0 / np.asarray(s)) if self.per_feature else 1.0 / float(s)
        if "intercept" in var:
            out["intercept_l2"] = 1.0 / float(var["intercept"])
        return out

    def solve(self, var: dict[str, Any]) -> None:
        """Fit at the variances ``var`` (modes only: the posterior variances come from
        :meth:`terms`)."""
        coord = self.coord
        coord.skip_variance = True
        try:
            self.last_diag = self.fit_fn(self.params(var))
        finally:
            coord.skip_variance = False
        self.n_fits += 1

    def precisions(self) -> tuple[np.ndarray, np.ndarray]:
        """Slope precisions (n, d) and intercept precisions (n,) of the current fit."""
        return _precisions(self.coord)

    def terms(self, *, refresh_others: bool = True) -> tuple[LaplaceTerms, float]:
        """The Laplace terms at the current fit, and the other random effects' share of
        the approximation (recomputed at this fit unless ``refresh_others`` is False: it
        moves only through this coordinate's scores, a second-order change between two
        nearby variances)."""
        coord = self.coord
        if self.others is not None and (refresh_others or self.rho is None):
            rho_table, self.other_value = self.others(coord.score(self.design))
            self.rho = rho_table if self.design.order is None else rho_table[self.design.order]
        rho, other_value = self.rho, self.other_value
        prec, prec_b = self.precisions()
        self.prec, self.prec_b = prec, prec_b
        terms = laplace_terms(
            self.arrays, self.design.perm, self.design.starts, self.y, self.w, self.o,
            self.entities, coord.coef, coord.intercept, prec, prec_b, fit_intercept=self.fit_b,
            rho=rho,
        )  # fmt: skip
        return terms, other_value

    def log_marginal(self, terms: LaplaceTerms, other_value: float) -> float:
        """Laplace approximation at the current fit (constants dropped)."""
        coord, e = self.coord, self.entities
        quad = (self.prec[e] * coord.coef[e] ** 2).sum()
        log_prec = np.log(self.prec[e]).sum()
        if self.fit_b:
            quad += (self.prec_b[e] * coord.intercept[e] ** 2).sum()
            log_prec += np.log(self.prec_b[e]).sum()
        own = -terms.loss.sum() - 0.5 * quad + 0.5 * log_prec - 0.5 * terms.logdet.sum()
        return float(own + other_value)

    def gradient(self, var: dict[str, Any], terms: LaplaceTerms) -> dict[str, Any]:
        """Per component: ``(S, n)`` with ``S = sum (m^2 + V_jj + 2 (V g)_j m_j)`` over its
        slots; the approximation's derivative in ``log sigma^2`` is ``(S / sigma^2 - n) / 2``
        and MacKay's update ``sigma^2 <- (S - sum V_jj) / (n - sum V_jj / sigma^2)``."""
        coord, e, d = self.coord, self.entities, self.d
        out: dict[str, Any] = {}

        def parts(m2: np.ndarray, v: np.ndarray, c: np.ndarray) -> tuple[float, float, float]:
            return float(np.sum(m2) + np.sum(v) + 2.0 * np.sum(c)), float(np.sum(v)), len(m2)

        if "intercept" in var:
            out["intercept"] = parts(coord.intercept[e] ** 2, terms.variance[:, d],
                                     terms.correction[:, d])  # fmt: skip
        if "slope" in var:
            m2, v, c = coord.coef[e] ** 2, terms.variance[:, :d], terms.correction[:, :d]
            if self.per_feature:
                out["slope"] = [parts(m2[:, j], v[:, j], c[:, j]) for j in range(d)]
            else:
                out["slope"] = parts(m2.ravel(), v.ravel(), c.ravel())
        return out

    def keep_variances(self, terms: LaplaceTerms) -> None:
        """Store the posterior variances of the final fit on the coordinate."""
        coord, e, d = self.coord, self.entities, self.d
        if coord.variance is not None and not sp.issparse(coord.variance):
            coord.variance[e] = terms.variance[:, :d]
        if coord.intercept_variance is not None and self.fit_b:
            coord.intercept_variance[e] = terms.variance[:, d]


class _RootFinder:
    """Zero of one component's derivative ``G(t) = (S(t) e^-t - n) / 2`` in
    ``t = log sigma^2``: a MacKay step first, then secant steps (superlinear where the
    fixed point alone converges slowly), each kept within a decade and the bounds."""

    def __init__(self) -> None:
        self.t_prev: float | None = None
        self.g_prev: float | None = None

    def step(self, t: float, parts: tuple[float, float, float]) -> float:
        total, v_sum, n = parts
        s2 = math.exp(t)
        g = 0.5 * (total / s2 - n)
        gamma = n - v_sum / s2
        mackay = (total - v_sum) / gamma if gamma > 1e-3 * n and total > v_sum else total / n
        t_new = math.log(max(mackay, 1e-300))
        if self.t_prev is not None and self.g_prev is not None and g != self.g_prev:
            secant = t - g * (t - self.t_prev) / (g - self.g_prev)
            # Trust the secant when it moves the same way as the gradient says.
            if (secant - t) * g > 0:
                t_new = secant
        self.t_prev, self.g_prev = t, g
        t_new = min(max(t_new, t - _LOG10), t + _LOG10)
        return min(max(t_new, math.log(VARIANCE_MIN)), math.log(VARIANCE_MAX))


_LOG10 = math.log(10.0)


def _relative_change(a: dict[str, Any], b: dict[str, Any]) -> float:
    worst = 0.0
    for key in a:
        x, y = np.atleast_1d(a[key]), np.atleast_1d(b[key])
        worst = max(worst, float(np.max(np.abs(np.log(x) - np.log(y)))))
    return worst


def estimate_prior(
    coord: Any,
    design: Any,
    y: np.ndarray,
    weight: np.ndarray,
    offset: np.ndarray,
    *,
    fit: Callable[[dict[str, Any]], dict[str, Any]],
    components: list[str],
    start: dict[str, Any],
    per_feature: bool = False,
    others: Callable[[np.ndarray], tuple[np.ndarray, float]] | None = None,
    warm: bool = False,
) -> PriorEstimate:
    """Estimate a random effect's prior variances by maximising the Laplace approximation.

    Parameters
    ----------
    coord : RandomEffect
        The coordinate (built, with dense coefficients).
    design, y, weight, offset
        Its training design, labels, weights and offsets (the other coordinates' scores).
    fit : callable
        ``fit(params)`` solves every entity with ``params`` (``l2``, ``intercept_l2``),
        warm-started, and returns the solver's diagnostics.
    components : list of str
        What to estimate: ``"intercept"`` and/or ``"slope"``.
    start : dict
        Starting variances of the components.
    per_feature : bool
        One slope variance per feature instead of one for all.
    others : callable, optional
        ``others(scores) -> (rho, value)``: the other random effects' ``-1/2 h'_i q_i``
        per table row and their share of the approximation (``-1/2 sum log det``) when
        this coordinate scores ``scores`` (:func:`others_terms`). With it, the
        approximation maximised is the block-diagonal Laplace approximation of the whole
        model, the other coordinates' modes held fixed.
    warm : bool
        ``start`` is an earlier pass's estimate: take at most a few steps (the estimate
        keeps moving with the other coordinates, pass after pass, as coordinate descent
        interleaves them).

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
    problem = _Problem(coord, design, y, weight, offset, fit, per_feature, others)
    var = {k: start[k] for k in components}
    trajectory: list[dict[str, Any]] = []
    lm = float("nan")
    finders: dict[Any, _RootFinder] = {}
    limit = _MAX_ITER_WARM if warm else _MAX_ITER
    converged = False
    for it in range(limit):
        problem.solve(var)
        terms, other_value = problem.terms(refresh_others=it % 3 == 0)
        lm = problem.log_marginal(terms, other_value)
        trajectory.append({**_plain(var), "log_marginal": lm})
        grads = problem.gradient(var, terms)
        new = dict(var)
        for key, parts in grads.items():
            if isinstance(parts, list):  # one slope variance per feature
                new[key] = [
                    math.exp(finders.setdefault((key, j), _RootFinder()).step(
                        math.log(var[key][j]), p))
                    for j, p in enumerate(parts)
                ]  # fmt: skip
            else:
                t = finders.setdefault(key, _RootFinder()).step(math.log(var[key]), parts)
                new[key] = math.exp(t)
        change = _relative_change(var, new)
        if change < _TOL:
            converged = True
            break
        if it == limit - 1:  # out of steps: keep the variances the coordinate is fitted at
            break
        var = new
    problem.keep_variances(terms)
    at_bound = [
        name for name, value in _plain(var).items()
        if any(not VARIANCE_MIN * 1.01 < v < VARIANCE_MAX / 1.01 for v in np.atleast_1d(value))
    ]  # fmt: skip
    if at_bound:
        logger.warning(
            "coordinate '%s': the estimated %s stopped at a bound (%g or %g): no "
            "between-entity variance, or entities whose labels separate; the estimate is "
            "kept finite",
            coord.name, ", ".join(at_bound), VARIANCE_MIN, VARIANCE_MAX,
        )  # fmt: skip
    return PriorEstimate(
        intercept_variance=_plain(var).get("intercept_variance"),
        slope_variance=_plain(var).get("slope_variance"),
        log_marginal=lm,
        trajectory=trajectory,
        n_fits=problem.n_fits,
        at_bound=at_bound,
        diagnostics=problem.last_diag,
        converged=converged,
    )


def _plain(var: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "intercept" in var:
        out["intercept_variance"] = float(var["intercept"])
    if "slope" in var:
        s = var["slope"]
        out["slope_variance"] = [float(x) for x in s] if isinstance(s, list) else float(s)
    return out


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
    per_feature = coord.config.prior == "per_feature"
    d = coord.coef.shape[1]
    previous = getattr(coord, "estimated_params", None) or {}
    fixed: dict[str, Any] = {}
    components = []
    if params.get("intercept_l2") == "auto" and coord.config.intercept:
        components.append("intercept")
    elif params.get("intercept_l2") not in (None, "auto"):
        fixed["intercept_l2"] = float(params["intercept_l2"])
    if params.get("l2") == "auto" and d > 0:
        components.append("slope")
    elif params.get("l2") != "auto":
        fixed["l2"] = float(params["l2"])
    fixed.setdefault("l2", 1.0)  # no slopes: any value
    fixed.setdefault("intercept_l2", fixed["l2"])

    def fit(p: dict[str, Any]) -> dict[str, Any]:
        return coord.fit(design, y, weight, offset,
                         l2=p.get("l2", fixed["l2"]),
                         intercept_l2=p.get("intercept_l2", fixed["intercept_l2"]))  # fmt: skip

    base = getattr(coord, "base_params", None)
    if coord._prior_base is not None and base:  # incremental: keep the previous estimate
        diag = fit({"l2": base["l2"], "intercept_l2": base.get("intercept_l2")})
        diag["prior"] = {"kept_from": "init_model", "l2": base["l2"],
                         "intercept_l2": base.get("intercept_l2")}  # fmt: skip
        coord.estimated_params = dict(coord.params)
        return diag
    if not components:
        return fit({})
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
    estimate = estimate_prior(coord, design, y, weight, offset, fit=fit, components=components,
                              start=start, per_feature=per_feature, others=others,
                              warm=bool(previous))  # fmt: skip
    diag = dict(estimate.diagnostics)  # its last solve left the coordinate at the estimate
    diag["prior"] = estimate.to_dict()
    coord.estimated_params = dict(coord.params)
    return diag


def others_terms(
    coords: list[Any],
    designs: dict[str, Any],
    y: np.ndarray,
    weight: np.ndarray,
    total: np.ndarray,
    scores: dict[str, np.ndarray],
    name: str,
) -> Callable[[np.ndarray], tuple[np.ndarray, float]] | None:
    """The other random effects' part of the Laplace approximation, as a function of
    ``name``'s training scores: ``(rho, value)`` with ``rho`` their ``-1/2 h'_i q_i`` per
    table row (summed) and ``value`` their ``-1/2 sum log det H`` (see
    :func:`estimate_prior`).

    ``total`` is the table's current total score and ``scores`` every coordinate's
    current training scores; only fitted random effects with dense coefficients and a
    training design take part.
    """
    others = [c for c in coords if c.name != name and _dense_random(c, designs.get(c.name))]
    if not others:
        return None
    base = total - scores[name]

    def share(mine: np.ndarray) -> tuple[np.ndarray, float]:
        rho = np.zeros(len(total))
        value = 0.0
        for c in others:
            design = designs[c.name]
            off = base + mine - scores[c.name]
            yy, ww, oo = _design_rows(design, y, weight, off)
            prec, prec_b = _precisions(c)
            entities = np.flatnonzero(c.trainable).astype(np.int64)
            terms = laplace_terms(
                design_arrays(design.X), design.perm, design.starts, yy, ww, oo, entities,
                c.coef, c.intercept, prec, prec_b, fit_intercept=bool(c.config.intercept),
            )  # fmt: skip
            if design.order is None:
                rho += terms.row_terms
            else:
                rho[design.order] += terms.row_terms
            value -= 0.5 * float(terms.logdet.sum())
        return rho, value

    return share


def _design_rows(
    design: Any, y: np.ndarray, weight: np.ndarray, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, weights (down-sampling included) and offsets of a training design's rows,
    in the design's row order, as contiguous float64 (what the compiled passes read)."""
    if design.order is not None:
        y, weight, offset = y[design.order], weight[design.order], offset[design.order]
    if design.weight_multiplier is not None:
        weight = weight * design.weight_multiplier
    return tuple(np.ascontiguousarray(v, dtype=np.float64) for v in (y, weight, offset))  # type: ignore[return-value]


def _precisions(coord: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every entity's prior precisions: slopes ``(n, d)`` and intercepts ``(n,)`` (the
    previous model's posterior in incremental training, else the coordinate's ``l2``)."""
    n, d = coord.coef.shape
    prior = coord._prior(coord.l2_vector(), coord.intercept_l2)
    if prior is not None:
        return prior.precision, prior.intercept_precision
    return np.broadcast_to(coord.l2_vector(), (n, d)).copy(), np.full(n, coord.intercept_l2)


def _dense_random(coord: Any, design: Any) -> bool:
    return (
        coord.kind == "random"
        and coord.fitted
        and not sp.issparse(coord.coef)
        and design is not None
        and getattr(design, "perm", None) is not None
    )

"""Automatic regularisation: a random effect's prior variances estimated from the data.

A random effect's ``l2`` is the inverse of its prior variance: ``w_e ~ N(0, sigma_w^2)``
for every slope and ``b_e ~ N(0, sigma_b^2)`` for the intercept. Mixed-model software
(lme4's ``glmer``) estimates those variances by maximising the Laplace approximation of
the marginal likelihood; :func:`estimate_prior` does the same, with the other
coordinates' scores as a fixed offset (inside coordinate descent, at every update of the
coordinate):

1. **Fixed-point iterations** (MacKay's update of the evidence framework): with the
   posterior modes ``m`` and posterior variances ``v = diag(H^-1)`` of every entity at
   the current variance, ``sigma^2 <- sum m^2 / sum (1 - v / sigma^2)`` for each variance
   component (one for the intercepts, one shared by the slopes or one per feature),
   falling back to the EM update ``sigma^2 <- mean(m^2 + v)`` when that is undefined.
   It lands near the optimum in a few iterations, but is a stationary point of a
   simplified objective (it ignores how the Hessian's weights move with the modes).
2. **Refinement**: each component's ``log sigma^2`` is then moved to the maximum of the
   Laplace approximation itself (successive parabolic steps, cyclically over the
   components), each evaluation a warm-started solve of every entity plus the log
   determinants of their Hessians (:func:`gdmix.solvers.laplace.laplace_terms`). Later
   passes of coordinate descent start here, from the previous pass's estimate.

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
from gdmix.solvers.laplace import laplace_terms
from gdmix.solvers.newton import design_arrays

__all__ = [
    "VARIANCE_MAX",
    "VARIANCE_MIN",
    "PriorEstimate",
    "estimate_prior",
    "fit_with_estimated_prior",
    "others_log_det",
]

logger = logging.getLogger("gdmix")

#: Bounds of an estimated prior variance (l2 between 1e-4 and 1e6).
VARIANCE_MIN = 1e-6
VARIANCE_MAX = 1e4
_FIXED_POINT_ITER = 30
_FIXED_POINT_TOL = 1e-3
_REFINE_ROUNDS = 2
_REFINE_STEP = 0.01  # in log(sigma^2): 1 %
_REFINE_H = 0.15


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (history and manifest)."""
        return {
            "intercept_variance": self.intercept_variance,
            "slope_variance": self.slope_variance,
            "log_marginal": self.log_marginal,
            "n_fits": self.n_fits,
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
        components: list[str],
        per_feature: bool,
        others: Callable[[np.ndarray], float] | None = None,
    ) -> None:
        self.coord, self.design, self.fit_fn, self.others = coord, design, fit, others
        self.components, self.per_feature = components, per_feature
        if design.order is not None:
            y, weight, offset = y[design.order], weight[design.order], offset[design.order]
        if design.weight_multiplier is not None:
            weight = weight * design.weight_multiplier
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        self.w = np.ascontiguousarray(weight, dtype=np.float64)
        self.o = np.ascontiguousarray(offset, dtype=np.float64)
        self.arrays = design_arrays(design.X)
        self.entities = np.flatnonzero(coord.trainable).astype(np.int64)
        self.d = coord.coef.shape[1]
        self.n_fits = 0
        self.last_diag: dict[str, Any] = {}

    def params(self, var: dict[str, Any]) -> dict[str, Any]:
        """Fit parameters (precisions) of the variances ``var``."""
        out: dict[str, Any] = {}
        if "slope" in var:
            s = var["slope"]
            out["l2"] = (1.0 / np.asarray(s)) if self.per_feature else 1.0 / float(s)
        if "intercept" in var:
            out["intercept_l2"] = 1.0 / float(var["intercept"])
        return out

    def solve(self, var: dict[str, Any], *, variances: bool = True) -> None:
        """Fit at the variances ``var`` (posterior variances too, unless not needed)."""
        coord = self.coord
        coord.skip_variance = not variances
        try:
            self.last_diag = self.fit_fn(self.params(var))
        finally:
            coord.skip_variance = False
        self.n_fits += 1

    def precisions(self) -> tuple[np.ndarray, np.ndarray]:
        """Slope precisions (n, d) and intercept precisions (n,) of the current fit."""
        coord = self.coord
        n = coord.coef.shape[0]
        prior = coord._prior(coord.l2_vector(), coord.intercept_l2)
        if prior is not None:
            return prior.precision, prior.intercept_precision
        return (np.broadcast_to(coord.l2_vector(), (n, self.d)).copy(),
                np.full(n, coord.intercept_l2))  # fmt: skip

    def log_marginal(self) -> float:
        """Laplace approximation at the current fit (constants dropped)."""
        coord = self.coord
        coef = coord.coef.toarray() if sp.issparse(coord.coef) else coord.coef
        prec, prec_b = self.precisions()
        fit_b = bool(coord.config.intercept)
        loss, logdet = laplace_terms(
            self.arrays, self.design.perm, self.design.starts, self.y, self.w, self.o,
            self.entities, coef, coord.intercept, prec, prec_b, fit_intercept=fit_b,
        )  # fmt: skip
        e = self.entities
        quad = (prec[e] * coef[e] ** 2).sum() + (
            (prec_b[e] * coord.intercept[e] ** 2).sum() if fit_b else 0.0
        )
        log_prec = np.log(prec[e]).sum() + (np.log(prec_b[e]).sum() if fit_b else 0.0)
        total = -loss.sum() - 0.5 * quad + 0.5 * log_prec - 0.5 * logdet.sum()
        if self.others is not None:  # the other random effects' Hessians move with our scores
            total += self.others(coord.score(self.design))
        return float(total)

    def fixed_point(self, var: dict[str, Any]) -> dict[str, Any]:
        """One MacKay update of every component (EM where it is undefined)."""
        coord, e = self.coord, self.entities
        out = dict(var)
        if "intercept" in var:
            m2 = coord.intercept[e] ** 2
            v = coord.intercept_variance[e]
            out["intercept"] = _update(m2, v, var["intercept"])
        if "slope" in var:
            coef = coord.coef.toarray() if sp.issparse(coord.coef) else coord.coef
            variance = coord.variance.toarray() if sp.issparse(coord.variance) else coord.variance
            m2, v = coef[e] ** 2, variance[e]
            if self.per_feature:
                out["slope"] = [_update(m2[:, j], v[:, j], var["slope"][j]) for j in range(self.d)]
            else:
                out["slope"] = _update(m2.ravel(), v.ravel(), var["slope"])
        return out


def _update(m2: np.ndarray, v: np.ndarray, s2: float) -> float:
    """MacKay's fixed-point update of one variance component, EM as the fallback."""
    gamma = float(np.sum(1.0 - v / s2))
    if gamma > 1e-3 * len(m2):
        new = float(np.sum(m2)) / gamma
    else:
        new = float(np.mean(m2 + v))
    return float(np.clip(new, VARIANCE_MIN, VARIANCE_MAX))


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
    others: Callable[[np.ndarray], float] | None = None,
    warm: bool = False,
) -> PriorEstimate:
    """Estimate a random effect's prior variances by maximising the Laplace approximation.

    Parameters
    ----------
    coord : RandomEffect
        The coordinate (built, with dense coefficients and full variances).
    design, y, weight, offset
        Its training design, labels, weights and offsets (the other coordinates' scores).
    fit : callable
        ``fit(params)`` solves every entity with ``params`` (``l2``, ``intercept_l2``),
        warm-started, and returns the solver's diagnostics.
    components : list of str
        What to estimate: ``"intercept"`` and/or ``"slope"``.
    start : dict
        Starting variances of the components (and the fixed ones' precisions, as
        ``params`` entries ``l2`` / ``intercept_l2`` to keep).
    per_feature : bool
        One slope variance per feature instead of one for all.
    others : callable, optional
        ``others(scores)``: the other random effects' share of the Laplace approximation
        (``-1/2 log det`` of their Hessians) when this coordinate scores ``scores``.
        With it, the approximation maximised is the block-diagonal Laplace approximation
        of the whole model, the other coordinates' modes held fixed.
    warm : bool
        ``start`` is a previous estimate (an earlier pass): skip the fixed-point stage.

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
    problem = _Problem(coord, design, y, weight, offset, fit, components, per_feature, others)
    var = {k: start[k] for k in components}
    trajectory: list[dict[str, Any]] = []

    def record(stage: str, lm: float | None) -> None:
        trajectory.append({"stage": stage, **_plain(var), "log_marginal": lm})

    # 1. Fixed-point iterations (from a cold start only: a previous pass's estimate is
    #    already near the optimum, and the fixed point is not quite it).
    if not warm:
        for _ in range(_FIXED_POINT_ITER):
            problem.solve(var)
            new = problem.fixed_point(var)
            change = _relative_change(var, new)
            var = new
            record("fixed_point", None)
            if change < _FIXED_POINT_TOL:
                break
    # 2. Refinement: each component to the maximum of the Laplace approximation.
    keys: list[tuple[str, int | None]] = []
    for c in components:
        slots = range(problem.d) if c == "slope" and per_feature else [None]
        keys += [(c, j) for j in slots]

    def evaluate(key: tuple[str, int | None], log_s2: float) -> float:
        problem.solve(_with(var, key, math.exp(log_s2)), variances=False)
        return problem.log_marginal()

    lm = float("nan")
    for _ in range(_REFINE_ROUNDS):
        before = dict(var)
        for key in keys:
            best_t, lm = _maximise(lambda t, key=key: evaluate(key, t), math.log(_get(var, key)))
            var = _with(var, key, math.exp(best_t))
        record("refine", lm)
        if _relative_change(before, var) < _REFINE_STEP:
            break
    problem.solve(var)  # leaves the coordinate fitted (with variances) at the estimate
    at_bound = [
        f"{c}[{j}]" if j is not None else c
        for c, j in keys
        if not VARIANCE_MIN * 1.01 < _get(var, (c, j)) < VARIANCE_MAX / 1.01
    ]
    if at_bound:
        logger.warning(
            "coordinate '%s': the prior variance of %s stopped at a bound (%g or %g): no "
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
    )


def _maximise(f: Callable[[float], float], t0: float) -> tuple[float, float]:
    """Maximum of a smooth, locally concave ``f`` near ``t0`` by successive parabolic
    steps (three points around the current one, a step to the parabola's vertex, a
    smaller spacing), kept within the variance bounds; returns ``(t, f(t))``, the best
    point evaluated."""
    lo, hi = math.log(VARIANCE_MIN), math.log(VARIANCE_MAX)
    seen: dict[float, float] = {}

    def value(t: float) -> float:
        t = min(max(t, lo), hi)
        if t not in seen:
            seen[t] = f(t)
        return seen[t]

    t, h = t0, _REFINE_H
    for _ in range(8):
        a, b, c = value(t - h), value(t), value(t + h)
        curvature = a - 2.0 * b + c
        if curvature >= 0.0:  # not concave here: walk uphill
            step = 2.0 * h if c > a else -2.0 * h
        else:
            step = float(np.clip(h * (a - c) / (2.0 * curvature), -4.0 * h, 4.0 * h))
        t = min(max(t + step, lo), hi)
        if abs(step) < _REFINE_STEP:
            break
        h = max(min(abs(step), _REFINE_H), _REFINE_STEP)
    best = max(seen, key=lambda k: seen[k])
    if value(t) >= seen[best]:
        best = min(max(t, lo), hi)
    return best, seen[best]


def _get(var: dict[str, Any], key: tuple[str, int | None]) -> float:
    c, j = key
    return float(var[c] if j is None else var[c][j])


def _with(var: dict[str, Any], key: tuple[str, int | None], value: float) -> dict[str, Any]:
    out = dict(var)
    c, j = key
    if j is None:
        out[c] = value
    else:
        out[c] = list(var[c])
        out[c][j] = value
    return out


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
    others: Callable[[np.ndarray], float] | None = None,
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


def others_log_det(
    coords: list[Any],
    designs: dict[str, Any],
    y: np.ndarray,
    weight: np.ndarray,
    total: np.ndarray,
    scores: dict[str, np.ndarray],
    name: str,
) -> Callable[[np.ndarray], float] | None:
    """``-1/2 sum log det H_c`` over the random effects ``coords`` other than ``name``,
    as a function of ``name``'s training scores (see :func:`estimate_prior`).

    ``total`` is the table's current total score and ``scores`` every coordinate's
    current training scores; only fitted random effects with dense coefficients and a
    training design take part.
    """
    others = [c for c in coords if c.name != name and _dense_random(c, designs.get(c.name))]
    if not others:
        return None
    base = total - scores[name]

    def share(mine: np.ndarray) -> float:
        out = 0.0
        for c in others:
            design = designs[c.name]
            off = base + mine - scores[c.name]
            yy, ww, oo = y, weight, off
            if design.order is not None:
                yy, ww, oo = y[design.order], weight[design.order], off[design.order]
            if design.weight_multiplier is not None:
                ww = ww * design.weight_multiplier
            n, d = c.coef.shape
            prior = c._prior(c.l2_vector(), c.intercept_l2)
            prec = (
                prior.precision
                if prior is not None
                else np.broadcast_to(c.l2_vector(), (n, d)).copy()
            )
            prec_b = prior.intercept_precision if prior is not None else np.full(n, c.intercept_l2)
            entities = np.flatnonzero(c.trainable).astype(np.int64)
            yy, ww, oo = (np.ascontiguousarray(v, dtype=np.float64) for v in (yy, ww, oo))
            _, logdet = laplace_terms(
                design_arrays(design.X), design.perm, design.starts, yy, ww, oo, entities,
                c.coef, c.intercept, prec, prec_b, fit_intercept=bool(c.config.intercept),
            )  # fmt: skip
            out -= 0.5 * float(logdet.sum())
        return out

    return share


def _dense_random(coord: Any, design: Any) -> bool:
    return (
        coord.kind == "random"
        and coord.fitted
        and not sp.issparse(coord.coef)
        and design is not None
        and getattr(design, "perm", None) is not None
    )

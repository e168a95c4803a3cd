"""Second-order minimisers of a smooth convex function: trust-region Newton-CG and Newton.

Both work on a :class:`SmoothProblem`, a function known through its value and gradient
at a point plus its Hessian there, either applied to vectors (:func:`trust_region_newton`,
for many variables) or formed in full (:func:`newton`, for a few hundred at most). The
fixed effect (:mod:`gdmix.solvers.lbfgs`) uses them on its scaled logistic objective.

The trust-region method follows the published algorithm of Lin and Moré (1999) and
Lin, Weng and Keerthi (2008), "Trust region Newton method for large-scale logistic
regression": each step minimises the quadratic model inside a ball with conjugate
gradients (Steihaug's truncation at the ball's surface or along negative curvature), and
the ball grows or shrinks with the ratio of the actual to the predicted decrease. The
conjugate gradients are preconditioned by the Hessian's diagonal, the ball measured in
the matching norm (diagonal preconditioning of truncated Newton methods for linear
classification is studied by Hsia, Chiang and Lin, 2018).
The first step is a full Newton step (no ball): from a warm start it is usually the
right one, and its length sets the first radius.

Stopping rules, shared by both methods (the reason is returned as ``stop``):

- ``"tol"``: the largest absolute gradient entry is at most ``tol``;
- ``"objective_tol"``: a full Newton step (interior, its linear system solved to the
  forcing tolerance) predicts a decrease of at most ``objective_tol * |f|`` (or of at
  most a few units of rounding of ``f``). Near the optimum that predicted decrease is the
  distance to the optimal value (to second order), so this is a test on the relative
  objective gap itself, not on the last step's progress;
- ``"max_iter"``: the iteration limit;
- ``"no_progress"``: no step decreases ``f`` (the trust region collapsed, or a line
  search found no decrease along a descent direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "MinimizeResult",
    "SmoothProblem",
    "newton",
    "newton_direction",
    "steihaug_cg",
    "trust_region_newton",
]

# Trust-region parameters of Lin and Moré: acceptance and update thresholds, radius factors.
_ETA0, _ETA1, _ETA2 = 1e-4, 0.25, 0.75
_SIGMA1, _SIGMA2, _SIGMA3 = 0.25, 0.5, 4.0


class SmoothProblem(Protocol):
    """A twice-differentiable function of a vector ``theta``."""

    def fg(self, theta: np.ndarray) -> tuple[float, np.ndarray, Any]:
        """Value, gradient and an opaque state for the Hessian at ``theta``."""

    def hessp(self, state: Any, v: np.ndarray) -> np.ndarray:
        """Hessian at the state's point applied to ``v``."""

    def hess_diag(self, state: Any) -> np.ndarray:
        """Positive diagonal preconditioner at the state's point (the Hessian's diagonal);
        :func:`trust_region_newton` only."""

    def hess(self, state: Any) -> np.ndarray:
        """Full Hessian at the state's point (:func:`newton` only)."""


@dataclass
class MinimizeResult:
    """Outcome of :func:`trust_region_newton` or :func:`newton`.

    Attributes
    ----------
    theta : ndarray
        Last accepted point.
    fun : float
        Value there.
    grad : ndarray
        Gradient there.
    state : Any
        Hessian state there.
    n_iter : int
        Outer iterations (accepted or rejected steps).
    n_fg, n_hessp : int
        Function/gradient evaluations and Hessian-vector products (passes over the data).
    stop : str
        Which rule stopped: ``tol``, ``objective_tol``, ``max_iter`` or ``no_progress``.
    step : ndarray or None
        The last interior Newton step computed (at the previous point), if any.
    """

    theta: np.ndarray
    fun: float
    grad: np.ndarray
    state: Any
    n_iter: int
    n_fg: int
    n_hessp: int
    stop: str
    step: np.ndarray | None


def steihaug_cg(
    hessp: Any, g: np.ndarray, radius: float, rtol: float, max_cg: int
) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """Approximately minimise ``Q(s) = g.s + s.H s / 2`` subject to ``||s|| <= radius``.

    Conjugate gradients (Steihaug): stop inside the ball when the residual is at most
    ``rtol * ||g||``, on the ball's surface when an iterate leaves it, or along a
    direction of non-positive curvature.

    Returns the step ``s``, the residual ``r = -g - H s``, whether the step is interior
    with its residual at most ``rtol * ||g||`` (a Newton step), and the number of
    products.
    """
    s = np.zeros_like(g)
    r = -g
    d = r.copy()
    rr = float(r @ r)
    target = rtol * math.sqrt(rr)
    for k in range(max_cg):
        hd = hessp(d)
        dhd = float(d @ hd)
        if dhd <= 0.0 or not math.isfinite(dhd):
            if math.isinf(radius):
                return s, r, False, k + 1
            tau = _to_boundary(s, d, radius)
            return s + tau * d, r - tau * hd, False, k + 1
        alpha = rr / dhd
        s_next = s + alpha * d
        if float(s_next @ s_next) >= radius * radius:
            tau = _to_boundary(s, d, radius)
            return s + tau * d, r - tau * hd, False, k + 1
        s = s_next
        r = r - alpha * hd
        rr_next = float(r @ r)
        if math.sqrt(rr_next) <= target:
            return s, r, True, k + 1
        d = r + (rr_next / rr) * d
        rr = rr_next
    return s, r, False, max_cg


def _to_boundary(s: np.ndarray, d: np.ndarray, radius: float) -> float:
    """The ``tau >= 0`` with ``||s + tau d|| = radius``."""
    sd, dd, ss = float(s @ d), float(d @ d), float(s @ s)
    if dd == 0.0:
        return 0.0
    disc = max(sd * sd + dd * (radius * radius - ss), 0.0)
    root = math.sqrt(disc)
    return (radius * radius - ss) / (sd + root) if sd >= 0 else (root - sd) / dd


def _forcing(gnorm: float, gnorm0: float) -> float:
    """Relative residual asked of the inner solve: tighter as the gradient shrinks, so
    that the outer iterations converge superlinearly."""
    return min(0.1, math.sqrt(gnorm / gnorm0)) if gnorm0 > 0 else 0.1


def _small_decrease(pred: float, f: float, objective_tol: float) -> bool:
    return pred <= objective_tol * abs(f) or pred <= 4 * np.finfo(float).eps * abs(f)


def trust_region_newton(
    problem: SmoothProblem,
    theta0: np.ndarray,
    *,
    tol: float,
    objective_tol: float,
    max_iter: int,
    max_cg: int | None = None,
) -> MinimizeResult:
    """Minimise with a trust-region Newton method, conjugate gradients inside.

    Parameters
    ----------
    problem : SmoothProblem
        The function (``hess`` is not used).
    theta0 : ndarray
        Starting point.
    tol, objective_tol, max_iter : float, float, int
        Stopping rules (see the module docstring); 0 turns a tolerance off.
    max_cg : int, optional
        Products per inner solve (default: the number of variables, at most 500).

    Returns
    -------
    MinimizeResult
    """
    theta = np.array(theta0, dtype=np.float64)
    f, g, state = problem.fg(theta)
    n_fg, n_hv = 1, 0
    max_cg = max_cg or max(10, min(len(theta), 500))
    gnorm0 = float(np.linalg.norm(g))
    radius = math.inf  # the first step is a full Newton step; its length sets the radius
    step: np.ndarray | None = None
    stop = "max_iter"
    it = 0
    while it < max_iter:
        if float(np.max(np.abs(g), initial=0.0)) <= tol:
            stop = "tol"
            break
        it += 1
        gnorm = float(np.linalg.norm(g))
        # Conjugate gradients on the diagonally preconditioned system ``M^-1/2 H M^-1/2``;
        # the ball is measured in the M-norm of the step.
        m = np.sqrt(problem.hess_diag(state))
        gm = g / m
        sm, rm, newton_step, k = steihaug_cg(
            lambda v, st=state, m=m: problem.hessp(st, v / m) / m,
            gm,
            radius,
            _forcing(gnorm, gnorm0),
            max_cg,
        )
        s = sm / m
        n_hv += k
        gs = float(g @ s)
        pred = -0.5 * (gs - float(sm @ rm))
        snorm = float(np.linalg.norm(sm))
        if newton_step:
            step = s
        if pred <= 0.0 or snorm == 0.0:
            stop = "no_progress"
            break
        small = newton_step and _small_decrease(pred, f, objective_tol)
        theta_new = theta + s
        f_new, g_new, state_new = problem.fg(theta_new)
        n_fg += 1
        actual = f - f_new
        if small:
            if f_new <= f:
                theta, f, g, state = theta_new, f_new, g_new, state_new
            stop = "objective_tol"
            break
        if math.isinf(radius):
            radius = snorm
        # The minimiser of the quadratic through f, g.s and f_new along s, as a factor.
        curv = f_new - f - gs
        alpha = _SIGMA3 if curv <= 0 else max(_SIGMA1, -0.5 * gs / curv)
        if not math.isfinite(f_new) or actual < _ETA0 * pred:
            radius = min(max(alpha, _SIGMA1) * snorm, _SIGMA2 * radius)
        elif actual < _ETA1 * pred:
            radius = max(_SIGMA1 * radius, min(alpha * snorm, _SIGMA2 * radius))
        elif actual < _ETA2 * pred:
            radius = max(_SIGMA1 * radius, min(alpha * snorm, _SIGMA3 * radius))
        else:
            radius = max(radius, min(alpha * snorm, _SIGMA3 * radius))
        if math.isfinite(f_new) and actual > _ETA0 * pred:
            theta, f, g, state = theta_new, f_new, g_new, state_new
        elif radius <= 1e-14 * max(1.0, float(np.linalg.norm(theta))):
            stop = "no_progress"
            break
    return MinimizeResult(theta, f, g, state, it, n_fg, n_hv, stop, step)


def newton_direction(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``-H^{-1} g`` by Cholesky; a least-squares solution when ``H`` is singular."""
    import scipy.linalg  # only here (40 ms to import, for every command otherwise)

    try:
        factor = scipy.linalg.cho_factor(H, check_finite=False)
        d = -scipy.linalg.cho_solve(factor, g, check_finite=False)
        if np.all(np.isfinite(d)):
            return d
    except np.linalg.LinAlgError:
        pass
    vals, vecs = np.linalg.eigh(H)
    keep = vals > vals.max(initial=0.0) * len(g) * np.finfo(float).eps
    return -(vecs[:, keep] @ ((vecs[:, keep].T @ g) / vals[keep]))


def newton(
    problem: SmoothProblem,
    theta0: np.ndarray,
    *,
    tol: float,
    objective_tol: float,
    max_iter: int,
) -> MinimizeResult:
    """Minimise with Newton's method (full Hessian, Cholesky) and a backtracking line search.

    For a few hundred variables at most. Parameters and result as
    :func:`trust_region_newton`; ``n_hessp`` counts full Hessians.
    """
    theta = np.array(theta0, dtype=np.float64)
    f, g, state = problem.fg(theta)
    n_fg, n_h = 1, 0
    step: np.ndarray | None = None
    stop = "max_iter"
    it = 0
    while it < max_iter:
        if float(np.max(np.abs(g), initial=0.0)) <= tol:
            stop = "tol"
            break
        it += 1
        d = newton_direction(problem.hess(state), g)
        n_h += 1
        step = d
        slope = float(g @ d)
        if not slope < 0.0:
            stop = "no_progress"
            break
        small = _small_decrease(-0.5 * slope, f, objective_tol)
        t = 1.0
        while True:
            theta_new = theta + t * d
            f_new, g_new, state_new = problem.fg(theta_new)
            n_fg += 1
            if math.isfinite(f_new) and f_new <= f + 1e-4 * t * slope:
                break
            if small or t < 1e-10:
                break
            # Minimiser of the quadratic through f, the slope and f_new, kept in [0.1, 0.5] t.
            fit = -slope * t * t / (2.0 * (f_new - f - slope * t)) if math.isfinite(f_new) else 0.0
            t = min(max(fit, 0.1 * t), 0.5 * t)
        sufficient = math.isfinite(f_new) and f_new <= f + 1e-4 * t * slope
        if math.isfinite(f_new) and f_new <= f:
            theta, f, g, state = theta_new, f_new, g_new, state_new
        if small:
            stop = "objective_tol"
            break
        if not sufficient:
            stop = "no_progress"
            break
    return MinimizeResult(theta, f, g, state, it, n_fg, n_h, stop, step)

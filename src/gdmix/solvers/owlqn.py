"""OWL-QN: L-BFGS for an objective with an L1 term (elastic net on the fixed effect).

Minimises ``f(theta) + sum_j lam_j |theta_j|`` for a smooth ``f`` (the scaled problem of
:mod:`gdmix.solvers.lbfgs`, whose L2 penalty is part of ``f``) and weights ``lam_j >= 0``
(0 for the intercept), by the orthant-wise limited-memory quasi-Newton method of Andrew
and Gao (ICML 2007):

- the *pseudo-gradient* is the gradient of ``f`` plus ``lam_j sign(theta_j)`` where
  ``theta_j != 0``, and at ``theta_j = 0`` the one-sided derivative that decreases the
  objective (0 when neither does: the coordinate stays at 0);
- the L-BFGS direction (from the smooth gradients' differences) is computed for the
  pseudo-gradient, and its components that disagree in sign with the steepest-descent
  direction are zeroed;
- the backtracking line search projects each trial point onto the orthant of the
  current point (a coordinate that would cross zero is set to zero).

A point where the pseudo-gradient vanishes is the optimum. Stopping rules follow the
other methods: ``tol`` on the largest pseudo-gradient entry, ``objective_tol`` on the
relative decrease of the last iteration, ``max_iter``, ``no_progress``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np

from gdmix.solvers.tron import MinimizeResult

__all__ = ["owlqn", "pseudo_gradient"]


class _Smooth(Protocol):
    def fg(self, theta: np.ndarray) -> tuple[float, np.ndarray, Any]: ...


def pseudo_gradient(theta: np.ndarray, grad: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """The pseudo-gradient of ``f + sum lam |theta|`` (``grad`` is f's gradient)."""
    pg = grad + lam * np.sign(theta)
    zero = theta == 0.0
    right, left = grad[zero] + lam[zero], grad[zero] - lam[zero]
    pg[zero] = np.where(right < 0.0, right, np.where(left > 0.0, left, 0.0))
    return pg


def owlqn(
    problem: _Smooth,
    theta0: np.ndarray,
    lam: np.ndarray,
    *,
    tol: float,
    objective_tol: float,
    max_iter: int,
    memory: int = 10,
) -> MinimizeResult:
    """Minimise ``problem.fg``'s function plus ``sum lam_j |theta_j|`` by OWL-QN.

    Parameters
    ----------
    problem : object with ``fg(theta) -> (value, gradient, state)``
        The smooth part.
    theta0 : ndarray
        Start point.
    lam : ndarray
        L1 weight of every variable (>= 0).
    tol, objective_tol, max_iter : float, float, int
        Stopping rules (see the module docstring).
    memory : int
        Number of correction pairs kept.

    Returns
    -------
    MinimizeResult
        ``fun`` is the whole objective (L1 term included), ``grad`` the pseudo-gradient.
    """
    lam = np.asarray(lam, dtype=np.float64)
    theta = np.array(theta0, dtype=np.float64)
    f, g, state = problem.fg(theta)
    n_fg = 1
    F = f + float(lam @ np.abs(theta))
    pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=memory)
    stop = "max_iter"
    it = 0
    pg = pseudo_gradient(theta, g, lam)
    for it in range(max_iter):
        if float(np.max(np.abs(pg), initial=0.0)) <= tol:
            stop = "tol"
            break
        d = -_two_loop(pg, pairs)
        d[d * pg >= 0.0] = 0.0  # keep the components that descend along -pg
        if not d.any():
            d = -pg
        orthant = np.where(theta != 0.0, np.sign(theta), -np.sign(pg))
        step = 1.0 if pairs else 1.0 / max(float(np.linalg.norm(pg)), 1.0)
        accepted = False
        for _ in range(60):
            trial = theta + step * d
            trial[np.sign(trial) != orthant] = 0.0
            f_new, g_new, state_new = problem.fg(trial)
            n_fg += 1
            F_new = f_new + float(lam @ np.abs(trial))
            if F_new <= F + 1e-4 * float(pg @ (trial - theta)):
                accepted = True
                break
            step *= 0.5
        if not accepted:
            stop = "no_progress"
            break
        s, y = trial - theta, g_new - g
        sy = float(s @ y)
        if sy > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(y)):
            pairs.append((s, y, 1.0 / sy))
        decrease = (F - F_new) / max(abs(F), abs(F_new), 1.0)
        theta, f, g, state, F = trial, f_new, g_new, state_new, F_new
        pg = pseudo_gradient(theta, g, lam)
        if decrease <= objective_tol:
            stop = "objective_tol"
            it += 1
            break
    else:
        it = max_iter
    if stop == "max_iter" and float(np.max(np.abs(pg), initial=0.0)) <= tol:
        stop = "tol"
    return MinimizeResult(theta, F, pg, state, it, n_fg, 0, stop, None)


def _two_loop(q: np.ndarray, pairs: deque[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """``H q`` for the L-BFGS inverse-Hessian approximation of the stored pairs."""
    q = q.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        alphas.append(a)
        q -= a * y
    if pairs:
        s, y, _ = pairs[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        b = rho * float(y @ q)
        q += (a - b) * s
    return q

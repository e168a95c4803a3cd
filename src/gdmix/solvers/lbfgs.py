"""Global L2-regularised logistic regression: the linear fixed effect's optimiser.

Objective, for design ``X`` (dense or sparse), labels ``y``, weights ``s``, offsets ``o``::

    F(w, b) = sum_i s_i * loss(y_i, o_i + x_i . w + b) + l2 / 2 * ||w||^2

The intercept ``b`` is not penalised. The data enter only through sums over rows
(:class:`LogisticSums`): in memory they are compiled multi-threaded passes
(:mod:`gdmix.solvers.fixed_kernels`); on a cluster, partition sums added up.

**Variables.** The optimisers work on ``F / W`` (``W`` the total weight, so that
tolerances do not depend on the number of rows) in scaled variables
``u_j = c_j w_j`` and, with an unpenalised intercept, centred columns
(``b = c - sum_j m_j w_j``, ``m_j`` the weighted column mean), with::

    c_j = sqrt(v_j + 4 * p_j / W)

``v_j`` the weighted variance of column ``j`` (its mean square when columns are not
centred) and ``p_j`` its penalty (``l2``). This is the square root of the diagonal of the
scaled Hessian at the start (where every row's curvature is 1/4), times 2: every variable
starts with curvature about 1/4. A dense column is standardised; a mostly-zero column
(rare words of a text, rare levels of a one-hot block) is not blown up by its tiny
standard deviation, because its penalty dominates its scale; centring takes the
collinearity of one-hot blocks with the intercept out of the coefficients' coupling.

**Methods** (``solver``):

- ``newton``: Newton's method with the full Hessian (Cholesky), for designs with few
  columns (``auto`` picks it up to :data:`NEWTON_MAX_FEATURES` columns);
- ``tron``: trust-region Newton with conjugate gradients on Hessian-vector products
  (:mod:`gdmix.solvers.tron`), for wide designs;
- ``lbfgs``: scipy's L-BFGS-B, for comparison or when only gradients are wanted.

**Stopping rules** (the one that fired is returned as ``stop``): ``tol`` on the largest
gradient entry of ``F / W`` in the scaled variables; ``objective_tol`` on the relative
objective decrease that a full Newton step predicts (Newton and trust-region; the
remaining gap to the optimum, to second order) or, for L-BFGS, on the last iteration's
decrease ``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1)``; ``max_iter``; ``no_progress``
(nothing decreases the objective any more); ``diverged``: the optimum does not exist,
because the data are separable in a direction nothing penalises (``l2 = 0``) or all
labels are equal with a free intercept. ``converged`` is true for ``tol`` and
``objective_tol`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import scipy.sparse as sp

from gdmix.losses import task_code
from gdmix.solvers import fixed_kernels as fk
from gdmix.solvers.owlqn import owlqn
from gdmix.solvers.tron import (
    MinimizeResult,
    newton,
    newton_direction,
    steihaug_cg,
    trust_region_newton,
)

__all__ = [
    "NEWTON_MAX_FEATURES",
    "NEWTON_MAX_HESSIAN_PASSES",
    "InMemoryLogistic",
    "LbfgsResult",
    "LogisticResult",
    "LogisticSums",
    "choose_solver",
    "fit_logistic_lbfgs",
    "logistic_objective",
    "minimize_logistic",
]

#: ``solver: auto`` uses Newton's method (full Hessian) up to this many columns, when a
#: Hessian costs at most :data:`NEWTON_MAX_HESSIAN_PASSES` passes over the data, and the
#: trust-region Newton-CG method otherwise.
NEWTON_MAX_FEATURES = 256
NEWTON_MAX_HESSIAN_PASSES = 4.0
#: A Newton step at the final point longer than this (in the scaled variables, about a
#: unit of margin per unit) on a problem with an unpenalised direction means the
#: coefficients are running off (separable data): no optimum to converge to.
RUNAWAY_STEP = 1e-3

Solver = Literal["auto", "newton", "tron", "lbfgs"]
STOP_MESSAGES = {
    "tol": "the largest scaled gradient entry is at most tol",
    "objective_tol": "a Newton step predicts a relative decrease of at most objective_tol",
    "max_iter": "iteration limit (max_iter) reached",
    "no_progress": "no step decreases the objective any more",
    "diverged": "coefficients run off: no optimum exists without a penalty",
}


@dataclass
class LogisticResult:
    """Solution and diagnostics of :func:`fit_logistic_lbfgs` / :func:`minimize_logistic`.

    Attributes
    ----------
    coef : ndarray, shape (p,)
        Coefficients ``w``.
    intercept : float
        Intercept ``b``.
    objective : float
        ``F(w, b)`` (not divided by the total weight).
    n_iter : int
        Iterations of the method.
    converged : bool
        True when ``tol`` or ``objective_tol`` stopped it.
    message : str
        Why it stopped, in words.
    stop : str
        Which rule stopped it: ``tol``, ``objective_tol``, ``max_iter``, ``no_progress``
        or ``diverged``.
    solver : str
        The method used (``newton``, ``tron`` or ``lbfgs``).
    n_passes : int
        Passes over the data (value/gradient evaluations, Hessian products, Hessians).
    """

    coef: np.ndarray
    intercept: float
    objective: float
    n_iter: int
    converged: bool
    message: str
    stop: str = ""
    solver: str = ""
    n_passes: int = 0


#: Former name of :class:`LogisticResult`.
LbfgsResult = LogisticResult


class LogisticSums(Protocol):
    """The data of a logistic regression, seen only through sums over its rows.

    Sums over row blocks add up, so a distributed design returns its partitions' totals.
    ``state`` is whatever :meth:`value_grad` needs to keep for the Hessian at its point
    (in memory, the rows' curvatures).
    """

    n_features: int
    #: Cost of :meth:`hessian` in passes of :meth:`value_grad` (for ``solver: auto``).
    hessian_cost: float

    def moments(self) -> tuple[float, np.ndarray, np.ndarray, float]:
        """``(sum s, X^T s, (X * X)^T s, sum s y)``."""

    def value_grad(
        self, w: np.ndarray, b: float, *, diag: bool = False, hessian: bool = False
    ) -> tuple[float, np.ndarray, float, Any, tuple[float, np.ndarray, np.ndarray] | None]:
        """``(sum s loss, X^T (s g), sum s g, state, diagonal)`` at ``(w, b)``; the
        diagonal sums ``(sum D, X^T D, (X * X)^T D)`` only when ``diag`` (else None).
        ``hessian`` announces that :meth:`hessian` will follow at this point (it may be
        computed in the same pass)."""

    def hess_vec(self, state: Any, v: np.ndarray, vb: float) -> tuple[np.ndarray, float]:
        """``(X^T D (X v + vb), sum D (X v + vb))``, ``D`` the curvatures of ``state``."""

    def hessian(self, state: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """``(X^T D X, X^T D 1, sum D)``."""


class InMemoryLogistic:
    """:class:`LogisticSums` of a design held in memory, by compiled threaded passes.

    Parameters
    ----------
    X : Design, ndarray or sparse matrix, shape (n, p)
        Design (CSR or dense float64/float32 are used without a copy; a CSR design gets
        a CSR copy of its transpose, see :class:`gdmix.solvers.fixed_kernels.Design`;
        pass a prepared ``Design`` to reuse it across fits).
    y : ndarray, shape (n,)
        0/1 labels.
    sample_weight, offset : ndarray, shape (n,), optional
        Row weights (default 1) and offsets (default 0).
    task : {"logistic", "linear", "poisson"}
        The loss (:mod:`gdmix.losses`); the class keeps its name from the first one.
    """

    def __init__(
        self,
        X: Any,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        offset: np.ndarray | None = None,
        task: str = "logistic",
    ) -> None:
        self.task = task
        self.task_code = task_code(task)
        self.X = fk.prepare(X)
        n, self.n_features = self.X.shape
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        self.s = (
            np.ones(n)
            if sample_weight is None
            else np.ascontiguousarray(sample_weight, dtype=np.float64)
        )
        self.o = np.zeros(n) if offset is None else np.ascontiguousarray(offset, dtype=np.float64)

    @property
    def hessian_cost(self) -> float:
        """Cost of a full Hessian in passes over the data."""
        hess, grad = fk.hessian_work(self.X)
        return hess / max(grad, 1.0)

    def moments(self) -> tuple[float, np.ndarray, np.ndarray, float]:
        """``(sum s, X^T s, (X * X)^T s, sum s y)``."""
        total, xs, xxs = fk.column_moments(self.X, self.s)
        return total, xs, xxs, float(self.s @ self.y)

    def value_grad(
        self, w: np.ndarray, b: float, *, diag: bool = False, hessian: bool = False
    ) -> tuple[float, np.ndarray, float, Any, tuple[float, np.ndarray, np.ndarray] | None]:
        """Loss and gradient sums at ``(w, b)``; the state is the rows' curvatures (and,
        with ``hessian``, the Hessian, summed in the same pass)."""
        X, y, s, o = self.X, self.y, self.s, self.o
        if hessian:
            loss, xg, gsum, d, pieces = fk.value_grad_hessian(X, y, s, o, w, b, task=self.task_code)
            return loss, xg, gsum, (d, pieces), None
        loss, xg, gsum, d, xd = fk.value_grad(X, y, s, o, w, b, diag=diag, task=self.task_code)
        sums = (float(d.sum()), xd[0], xd[1]) if xd is not None else None
        return loss, xg, gsum, (d, None), sums

    def hess_vec(self, state: Any, v: np.ndarray, vb: float) -> tuple[np.ndarray, float]:
        """Hessian of the loss sum (at the state's point) applied to ``(v, vb)``."""
        return fk.hess_vec(self.X, state[0], v, vb)

    def hessian(self, state: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """Hessian pieces of the loss sum at the state's point."""
        return state[1] if state[1] is not None else fk.hessian(self.X, state[0])


def logistic_objective(
    X: np.ndarray | sp.spmatrix,
    y: np.ndarray,
    coef: np.ndarray,
    intercept: float,
    *,
    l2: float,
    sample_weight: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> float:
    """Value of the penalised objective ``F(w, b)`` (unscaled)."""
    z = np.asarray(X @ coef).ravel() + intercept
    if offset is not None:
        z = z + offset
    s = np.ones(len(y)) if sample_weight is None else sample_weight
    loss = np.logaddexp(0.0, z) - y * z
    return float(s @ loss + 0.5 * l2 * coef @ coef)


def choose_solver(solver: Solver, n_features: int, hessian_cost: float) -> str:
    """The method ``solver`` stands for.

    ``auto`` is ``newton`` for at most :data:`NEWTON_MAX_FEATURES` columns when a full
    Hessian costs at most :data:`NEWTON_MAX_HESSIAN_PASSES` passes over the data (Newton
    needs few iterations and no conjugate gradients, which collinear designs such as
    one-hot blocks next to an intercept make long), and ``tron`` otherwise.
    """
    if solver != "auto":
        return solver
    if n_features <= NEWTON_MAX_FEATURES and hessian_cost <= NEWTON_MAX_HESSIAN_PASSES:
        return "newton"
    return "tron"


def fit_logistic_lbfgs(
    X: np.ndarray | sp.spmatrix,
    y: np.ndarray,
    *,
    l2: float,
    sample_weight: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    fit_intercept: bool = True,
    coef0: np.ndarray | None = None,
    intercept0: float = 0.0,
    max_iter: int = 500,
    tol: float = 1e-10,
    objective_tol: float = 1e-12,
    solver: Solver = "auto",
    intercept_l2: float = 0.0,
    prior_mean: np.ndarray | None = None,
    prior_precision: np.ndarray | None = None,
    intercept_prior_mean: float = 0.0,
) -> LogisticResult:
    """Minimise the L2-penalised logistic objective of an in-memory design.

    Parameters
    ----------
    X : ndarray or sparse matrix, shape (n, p)
        Design (CSR, or a dense float64/float32 array, is used without a copy).
    y : ndarray, shape (n,)
        0/1 labels.
    l2 : float
        Penalty on ``w`` (not on the intercept).
    sample_weight, offset : ndarray, shape (n,), optional
        Row weights and fixed offsets added to the margin.
    fit_intercept : bool
        Fit the unpenalised intercept ``b`` (else ``b = 0``).
    coef0, intercept0 : optional
        Starting point (warm start).
    max_iter : int
        Iteration limit of the method.
    tol : float
        Largest gradient entry of ``F / W`` in the scaled variables (see the module
        docstring); 0 turns the rule off.
    objective_tol : float
        Relative objective decrease predicted by a Newton step (the remaining gap), or
        for L-BFGS achieved by the last iteration; 0 turns the rule off.
    solver : {"auto", "newton", "tron", "lbfgs"}
        The method (see :func:`choose_solver`).
    intercept_l2 : float
        Penalty on the intercept, ``intercept_l2 / 2 * (b - intercept_prior_mean)^2``
        (0: unpenalised).
    prior_mean, prior_precision : ndarray, shape (p,), optional
        Gaussian prior on ``w``: the penalty becomes
        ``1/2 sum_j prior_precision_j (w_j - prior_mean_j)^2`` (``l2`` is then unused).
    intercept_prior_mean : float
        Prior mean of the intercept.

    Returns
    -------
    LogisticResult
    """
    return minimize_logistic(
        InMemoryLogistic(X, y, sample_weight, offset),
        l2=l2,
        fit_intercept=fit_intercept,
        coef0=coef0,
        intercept0=intercept0,
        max_iter=max_iter,
        tol=tol,
        objective_tol=objective_tol,
        solver=solver,
        intercept_l2=intercept_l2,
        prior_mean=prior_mean,
        prior_precision=prior_precision,
        intercept_prior_mean=intercept_prior_mean,
    )


class _ScaledProblem:
    """``F / W`` in the scaled, centred variables ``theta = (u, c)`` of the module
    docstring, with the gradient and the Hessian (as products or in full)."""

    def __init__(
        self,
        data: LogisticSums,
        moments: tuple[float, np.ndarray, np.ndarray, float],
        prec: np.ndarray,
        mu: np.ndarray,
        intercept_l2: float,
        intercept_mu: float,
        fit_intercept: bool,
    ) -> None:
        total, xs, xxs, _ = moments
        self.data, self.prec, self.mu = data, prec, mu
        self.il2, self.b_mu, self.fit_intercept = intercept_l2, intercept_mu, fit_intercept
        self.p = len(prec)
        self.inv_w = 1.0 / total if total > 0 else 1.0
        centred = fit_intercept and intercept_l2 == 0.0
        self.mean = xs * self.inv_w if centred else np.zeros(self.p)
        var = np.clip(xxs * self.inv_w - self.mean**2, 0.0, None)
        scale = np.sqrt(var + 4.0 * prec * self.inv_w)
        scale[~(scale > 1e-150)] = 1.0
        self.scale = scale
        self.n_passes = 0
        #: Whether evaluations also sum the Hessian's diagonal (for the trust-region method)
        #: or the Hessian itself (for Newton's method).
        self.want_diag = False
        self.want_hessian = False

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, float]:
        w = theta[: self.p] / self.scale
        b = (float(theta[self.p]) if self.fit_intercept else 0.0) - float(self.mean @ w)
        return w, b

    def join(self, w: np.ndarray, b: float) -> np.ndarray:
        theta = np.zeros(self.p + int(self.fit_intercept))
        theta[: self.p] = w * self.scale
        if self.fit_intercept:
            theta[self.p] = b + float(self.mean @ w)
        return theta

    def fg(self, theta: np.ndarray) -> tuple[float, np.ndarray, Any]:
        w, b = self.split(theta)
        loss, xg, gsum, state, diag = self.data.value_grad(
            w, b, diag=self.want_diag, hessian=self.want_hessian
        )
        self.n_passes += 1
        dw, db = w - self.mu, b - self.b_mu
        value = loss + 0.5 * float((self.prec * dw) @ dw) + 0.5 * self.il2 * db * db
        grad = np.empty_like(theta)
        grad[: self.p] = (xg - self.mean * gsum + self.prec * dw) / self.scale
        if self.fit_intercept:
            grad[self.p] = gsum + self.il2 * db
        return value * self.inv_w, grad * self.inv_w, (state, diag)

    def hessp(self, state: Any, v: np.ndarray) -> np.ndarray:
        dw = v[: self.p] / self.scale
        db = (float(v[self.p]) if self.fit_intercept else 0.0) - float(self.mean @ dw)
        xhv, hsum = self.data.hess_vec(state[0], dw, db)
        self.n_passes += 1
        out = np.empty_like(v)
        out[: self.p] = (xhv - self.mean * hsum + self.prec * dw) / self.scale
        if self.fit_intercept:
            out[self.p] = hsum + self.il2 * db
        return out * self.inv_w

    def hess_diag(self, state: Any) -> np.ndarray:
        _, sums = state
        dsum, xd, xxd = sums
        m = self.mean
        data = np.clip(xxd - 2.0 * m * xd + m * m * dsum, 0.0, None)
        out = np.empty(self.p + int(self.fit_intercept))
        out[: self.p] = (data + self.prec) / self.scale**2
        if self.fit_intercept:
            out[self.p] = dsum + self.il2
        # Floor: a column that no row with curvature touches keeps a unit scale.
        top = float(out.max(initial=0.0))
        return np.maximum(out, max(top, 1e-300) * 1e-10)

    def hess(self, state: Any) -> np.ndarray:
        xdx, xd, dsum = self.data.hessian(state[0])
        self.n_passes += 0 if self.want_hessian else 1  # else summed with the gradient
        m, inv = self.mean, 1.0 / self.scale
        hww = xdx - np.outer(xd, m) - np.outer(m, xd) + dsum * np.outer(m, m)
        hww = hww * np.outer(inv, inv)
        hww[np.diag_indices(self.p)] += self.prec * inv * inv
        if not self.fit_intercept:
            return hww * self.inv_w
        H = np.empty((self.p + 1, self.p + 1))
        H[: self.p, : self.p] = hww
        H[: self.p, self.p] = H[self.p, : self.p] = (xd - m * dsum) * inv
        H[self.p, self.p] = dsum + self.il2
        return H * self.inv_w


def minimize_logistic(
    data: LogisticSums,
    *,
    l2: float,
    fit_intercept: bool = True,
    coef0: np.ndarray | None = None,
    intercept0: float = 0.0,
    max_iter: int = 500,
    tol: float = 1e-10,
    objective_tol: float = 1e-12,
    solver: Solver = "auto",
    intercept_l2: float = 0.0,
    prior_mean: np.ndarray | None = None,
    prior_precision: np.ndarray | None = None,
    intercept_prior_mean: float = 0.0,
    moments: tuple[float, np.ndarray, np.ndarray, float] | None = None,
    l1: float = 0.0,
) -> LogisticResult:
    """Minimise the penalised logistic objective of data known through sums.

    ``data`` may live anywhere (in memory, or in partitions on a cluster whose sums are
    added up). ``moments`` are ``data.moments()`` when already known. ``l1 > 0`` adds
    ``l1 * ||w||_1`` (the intercept unpenalised; elastic net with ``l2``), minimised by
    OWL-QN (:mod:`gdmix.solvers.owlqn`) whatever ``solver`` says. The other parameters
    are those of :func:`fit_logistic_lbfgs`.
    """
    p = data.n_features
    prec = np.full(p, float(l2)) if prior_precision is None else np.asarray(prior_precision)
    prec = np.asarray(prec, dtype=np.float64)
    mu = np.zeros(p) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
    known = moments is not None
    moments = data.moments() if moments is None else moments
    problem = _ScaledProblem(
        data, moments, prec, mu, float(intercept_l2), float(intercept_prior_mean), fit_intercept
    )
    problem.n_passes = 0 if known else 1
    w0 = np.zeros(p) if coef0 is None else np.asarray(coef0, dtype=np.float64)
    theta0 = problem.join(w0, float(intercept0))
    if l1 < 0 or not math.isfinite(l1):
        raise ValueError(f"l1 must be a finite number >= 0. Got {l1} instead")
    method = (
        "owlqn"
        if l1 > 0
        else choose_solver(solver, p, data.hessian_cost if solver == "auto" else 0.0)
    )
    if method == "owlqn":
        lam = np.zeros(len(theta0))
        lam[:p] = l1 * problem.inv_w / problem.scale
        out = owlqn(problem, theta0, lam, tol=tol, objective_tol=objective_tol, max_iter=max_iter)
    elif method == "lbfgs":
        out = _lbfgs(problem, theta0, tol=tol, objective_tol=objective_tol, max_iter=max_iter)
    elif method == "newton":
        problem.want_hessian = True
        out = newton(problem, theta0, tol=tol, objective_tol=objective_tol, max_iter=max_iter)
    elif method == "tron":
        problem.want_diag = True
        out = trust_region_newton(
            problem, theta0, tol=tol, objective_tol=objective_tol, max_iter=max_iter
        )
    else:
        raise ValueError(f"unknown solver {solver!r}: use auto, newton, tron or lbfgs")
    stop = out.stop
    runs = method != "owlqn" and _runs_off(problem, moments, out, method)
    if stop in ("tol", "objective_tol") and runs:
        stop = "diverged"
    w, b = problem.split(out.theta)
    return LogisticResult(
        coef=w,
        intercept=b if fit_intercept else 0.0,
        objective=float(out.fun / problem.inv_w),
        n_iter=out.n_iter,
        converged=stop in ("tol", "objective_tol"),
        message=STOP_MESSAGES.get(stop, stop),
        stop=stop,
        solver=method,
        n_passes=problem.n_passes,
    )


def _runs_off(
    problem: _ScaledProblem,
    moments: tuple[float, np.ndarray, np.ndarray, float],
    out: MinimizeResult,
    method: str,
) -> bool:
    """Whether the "solution" is a point on the way to infinity (no optimum exists).

    A free intercept runs off when every label is equal. Coefficients without a penalty
    run off on separable data: there the Newton step keeps a length of about one unit of
    margin while the gradient vanishes, whereas at a true optimum it vanishes too.
    """
    total, _, xxs, label_sum = moments
    task = getattr(problem.data, "task", "logistic")
    if task == "linear":  # a squared loss always has a minimum
        return False
    if problem.fit_intercept and problem.il2 == 0.0 and total > 0:
        if label_sum <= 0.0 or (task == "logistic" and label_sum >= total):
            return True
    free = (problem.prec == 0.0) & (xxs > 0.0)
    if not free.any():
        return False
    state = out.state
    if method == "lbfgs":
        _, _, state = problem.fg(out.theta)
    if problem.p < NEWTON_MAX_FEATURES:
        step = newton_direction(problem.hess(state), out.grad)
    else:  # tiny curvatures (the runaway directions) need a tight inner solve
        step, _, _, _ = steihaug_cg(
            lambda v: problem.hessp(state, v),
            out.grad,
            math.inf,
            1e-6,
            max(10, min(len(out.grad), 500)),
        )
    return float(np.max(np.abs(step), initial=0.0)) > RUNAWAY_STEP


def _lbfgs(
    problem: _ScaledProblem, theta0: np.ndarray, *, tol: float, objective_tol: float, max_iter: int
) -> MinimizeResult:
    """scipy's L-BFGS-B on the scaled problem, its exit mapped to the stopping rules."""
    if theta0.size == 0:  # nothing to fit: the gradient test holds trivially
        f, g, state = problem.fg(theta0)
        return MinimizeResult(theta0, f, g, state, 0, 1, 0, "tol", None)

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        f, g, _ = problem.fg(theta)
        return f, g

    import scipy.optimize  # only this solver needs it (0.2 s to import)

    res = scipy.optimize.minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol, "ftol": objective_tol, "maxcor": 20},
    )
    text = str(res.message).upper()
    if "PROJECTED GRADIENT" in text or "PGTOL" in text:
        stop = "tol"
    elif "REL_REDUCTION" in text or "RELATIVE REDUCTION" in text:
        stop = "objective_tol"
    elif "ITERATIONS" in text or "LIMIT" in text:
        stop = "max_iter"
    else:
        stop = "no_progress"
    grad = np.asarray(res.jac, dtype=np.float64)
    return MinimizeResult(
        np.asarray(res.x), float(res.fun), grad, None, int(res.nit), int(res.nfev), 0, stop, None
    )

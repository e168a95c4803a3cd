"""Pointwise losses: value, first and second derivative in the margin.

Three tasks (``task:`` of a config), each the negative log-likelihood of a GLM with its
canonical link, up to terms free of the margin ``z``:

============ ============================= ===================== ===================
task         loss                          derivative            second derivative
============ ============================= ===================== ===================
``logistic`` ``log(1 + exp(z)) - y z``     ``sigmoid(z) - y``    ``sigmoid (1 - sigmoid)``
``linear``   ``(z - y)^2 / 2``             ``z - y``             ``1``
``poisson``  ``exp(z) - y z``              ``exp(z) - y``        ``exp(z)``
============ ============================= ===================== ===================

Labels are 0/1 (logistic), any finite number (linear, Gaussian with unit variance) or
counts >= 0 (Poisson, log link). Written to be stable for any finite ``z``. The scalar
versions are numba-compiled for the solvers, which take the task as an integer code
(:data:`TASK_CODES`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from gdmix.tasks import TASKS

__all__ = [
    "TASKS",
    "TASK_CODES",
    "inverse_link",
    "logistic_grad_hess",
    "logistic_loss",
    "pointwise",
    "sigmoid",
    "task_code",
    "task_loss",
]

#: Integer code of each task, as the compiled kernels take it.
TASK_CODES = {name: i for i, name in enumerate(TASKS)}
#: Largest margin whose ``exp`` is taken (Poisson): beyond it ``exp`` overflows float64.
MAX_EXP_MARGIN = 700.0


def task_code(task: str) -> int:
    """Integer code of ``task`` for the compiled kernels.

    Raises
    ------
    ValueError
        When ``task`` is not one of :data:`TASKS`.
    """
    try:
        return TASK_CODES[task]
    except KeyError:
        raise ValueError(f"task must be one of {TASKS}. Got {task!r} instead") from None


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Stable logistic function ``1 / (1 + exp(-z))``."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def logistic_loss(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per-row loss ``log(1 + exp(z)) - y z`` (the negative log-likelihood)."""
    z = np.asarray(z, dtype=np.float64)
    return np.logaddexp(0.0, z) - y * z


def logistic_grad_hess(y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivatives of :func:`logistic_loss` in the margin."""
    p = sigmoid(z)
    return p - y, p * (1.0 - p)


@numba.njit(cache=True, inline="always")
def loss_scalar(y: float, z: float) -> float:
    """Scalar :func:`logistic_loss` for compiled code."""
    if z > 0.0:
        return z + math.log1p(math.exp(-z)) - y * z
    return math.log1p(math.exp(z)) - y * z


@numba.njit(cache=True, inline="always")
def sigmoid_scalar(z: float) -> float:
    """Scalar :func:`sigmoid` for compiled code."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@numba.njit(cache=True, inline="always")
def pointwise(task: int, y: float, z: float) -> tuple[float, float, float]:
    """Loss, derivative and second derivative at margin ``z`` for the task of code
    ``task`` (0 logistic, 1 linear, 2 Poisson), for compiled code."""
    if task == 1:
        r = z - y
        return 0.5 * r * r, r, 1.0
    if task == 2:
        mu = math.exp(min(z, MAX_EXP_MARGIN))
        return mu - y * z, mu - y, mu
    if z > 0.0:
        e = math.exp(-z)
        loss = z + math.log1p(e) - y * z
        sig = 1.0 / (1.0 + e)
    else:
        e = math.exp(z)
        loss = math.log1p(e) - y * z
        sig = e / (1.0 + e)
    return loss, sig - y, e / ((1.0 + e) * (1.0 + e))


def task_loss(task: str, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per-row loss of ``task`` (see the module table)."""
    z = np.asarray(z, dtype=np.float64)
    if task == "linear":
        return 0.5 * (z - y) ** 2
    if task == "poisson":
        return np.exp(np.minimum(z, MAX_EXP_MARGIN)) - y * z
    return logistic_loss(y, z)


def inverse_link(task: str, z: np.ndarray) -> np.ndarray:
    """The mean a margin stands for: a probability (logistic), ``z`` itself (linear) or
    a rate ``exp(z)`` (Poisson)."""
    z = np.asarray(z, dtype=np.float64)
    if task == "linear":
        return z.copy()
    if task == "poisson":
        return np.exp(np.minimum(z, MAX_EXP_MARGIN))
    return sigmoid(z)

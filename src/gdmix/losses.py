"""Pointwise logistic loss: value, first and second derivative in the margin.

For a label ``y`` in {0, 1} and a margin (logit) ``z`` the loss is
``log(1 + exp(z)) - y * z``, its derivative ``sigmoid(z) - y`` and its second
derivative ``sigmoid(z) * (1 - sigmoid(z))``. Written to be stable for any finite
``z``. The scalar versions are numba-compiled for the per-entity solvers.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["logistic_grad_hess", "logistic_loss", "sigmoid"]


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

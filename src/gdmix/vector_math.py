"""exp(-|z|) and log1p(x) on [0, 1] as plain arithmetic, so that loops over them vectorise.

A libm call per value keeps a compiled loop scalar; these polynomials (Taylor series
after a range reduction) compile to SIMD code and stay within 1e-15 relative error
(``tests/test_vector_math.py`` checks them against numpy). The lockstep random-effect
solver and the logistic loss sums (:mod:`gdmix.metrics`) use them.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["FMA_ONLY", "INV_LN2", "LN2_HI", "LN2_LO", "exp_neg_abs", "exp_neg_poly", "log1p_poly",
           "log1p_unit"]  # fmt: skip

#: numba ``fastmath`` flags of these kernels and their callers: fused multiply-add only,
#: exact IEEE semantics otherwise (NaN/inf checks stay meaningful).
FMA_ONLY = {"contract"}

#: ln(2) split in two for an exact range reduction, and 1 / ln(2).
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00


@numba.njit(cache=True, inline="always", fastmath=FMA_ONLY)
def exp_neg_poly(r):
    """exp(-r) for |r| <= ln(2)/2: Taylor series to degree 13."""
    q = -1.0 / 6227020800.0
    q = q * r + 1.0 / 479001600.0
    q = q * r - 1.0 / 39916800.0
    q = q * r + 1.0 / 3628800.0
    q = q * r - 1.0 / 362880.0
    q = q * r + 1.0 / 40320.0
    q = q * r - 1.0 / 5040.0
    q = q * r + 1.0 / 720.0
    q = q * r - 1.0 / 120.0
    q = q * r + 1.0 / 24.0
    q = q * r - 1.0 / 6.0
    q = q * r + 0.5
    q = q * r - 1.0
    return q * r + 1.0


@numba.njit(cache=True, inline="always", fastmath=FMA_ONLY)
def log1p_poly(x):
    """log1p(x) for 0 <= x <= 1: 2 atanh(x / (2 + x)), series in s^2 <= 1/9."""
    s = x / (2.0 + x)
    s2 = s * s
    q = 1.0 / 35.0
    q = q * s2 + 1.0 / 33.0
    q = q * s2 + 1.0 / 31.0
    q = q * s2 + 1.0 / 29.0
    q = q * s2 + 1.0 / 27.0
    q = q * s2 + 1.0 / 25.0
    q = q * s2 + 1.0 / 23.0
    q = q * s2 + 1.0 / 21.0
    q = q * s2 + 1.0 / 19.0
    q = q * s2 + 1.0 / 17.0
    q = q * s2 + 1.0 / 15.0
    q = q * s2 + 1.0 / 13.0
    q = q * s2 + 1.0 / 11.0
    q = q * s2 + 1.0 / 9.0
    q = q * s2 + 1.0 / 7.0
    q = q * s2 + 1.0 / 5.0
    q = q * s2 + 1.0 / 3.0
    q = q * s2 + 1.0
    return 2.0 * s * q


@numba.njit(cache=True, fastmath=FMA_ONLY)
def exp_neg_abs(z, out, bits):
    """``out = exp(-|z|)`` elementwise (1-D); ``bits`` is int64 scratch of the same size."""
    for k in range(z.shape[0]):
        a = min(abs(z[k]), 700.0)
        nf = math.floor(a * INV_LN2 + 0.5)
        out[k] = exp_neg_poly((a - nf * LN2_HI) - nf * LN2_LO)
        bits[k] = (1023 - np.int64(nf)) << 52
    scale = bits.view(np.float64)
    for k in range(z.shape[0]):
        out[k] *= scale[k]


@numba.njit(cache=True, fastmath=FMA_ONLY)
def log1p_unit(x, out):
    """``out = log1p(x)`` elementwise for ``0 <= x <= 1``."""
    for k in range(x.shape[0]):
        out[k] = log1p_poly(x[k])

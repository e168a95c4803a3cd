"""The vectorisable exp(-|z|) and log1p against numpy, and the loss sum built on them."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss

from gdmix.metrics import _logit_loss_sum
from gdmix.vector_math import exp_neg_abs, log1p_unit


def test_exp_neg_abs_and_log1p_within_1e15_of_numpy():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(size=20_000) * 10, [0.0, -0.0, 1e-300, 700.0, -745.0]])
    out, bits = np.empty_like(z), np.empty(len(z), dtype=np.int64)
    exp_neg_abs(z, out, bits)
    np.testing.assert_allclose(out, np.exp(-np.minimum(np.abs(z), 700.0)), rtol=1e-15, atol=0)
    x = np.concatenate([rng.uniform(size=20_000), [0.0, 1.0, 1e-300]])
    got = np.empty_like(x)
    log1p_unit(x, got)
    np.testing.assert_allclose(got, np.log1p(x), rtol=1e-15, atol=0)


def test_the_logistic_loss_sum_equals_sklearn_on_any_length():
    rng = np.random.default_rng(1)
    for n in (1, 7, 511, 513, 40_000, 100_003):
        z = rng.normal(size=n) * 4
        y = (rng.uniform(size=n) < 0.3).astype(np.float64)
        w = rng.uniform(0.1, 3.0, size=n)
        p = 1.0 / (1.0 + np.exp(-z))
        weighted = _logit_loss_sum(y, z, w, True) / w.sum()
        plain = _logit_loss_sum(y, z, w, False) / n
        labels = [0.0, 1.0]
        np.testing.assert_allclose(weighted, log_loss(y, p, sample_weight=w, labels=labels),
                                   rtol=1e-10)  # fmt: skip
        np.testing.assert_allclose(plain, log_loss(y, p, labels=labels), rtol=1e-10)
    z = np.array([0.5, np.nan, 1.0])
    assert np.isnan(_logit_loss_sum(np.ones(3), z, np.ones(3), True))

"""Tests of gdmix.metrics against scikit-learn and explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from gdmix.errors import DataError
from gdmix.metrics import BinaryEvaluator, evaluate, grouped_auc, log_loss, roc_auc


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _data(seed: int, n: int = 2000, *, ties: bool = False, weights: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    s = rng.normal(size=n) + 0.7 * y
    if ties:
        s = np.round(s, 1)
    w = rng.uniform(0.0, 3.0, size=n) if weights else None
    return y, s, w


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("weights", [False, True])
def test_roc_auc_matches_sklearn(seed: int, ties: bool, weights: bool) -> None:
    y, s, w = _data(seed, ties=ties, weights=weights)
    expected = roc_auc_score(y, s, sample_weight=w)
    assert roc_auc(y, s, w) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_all_tied_is_half() -> None:
    assert roc_auc([0, 1, 0, 1], [3.0, 3.0, 3.0, 3.0]) == pytest.approx(0.5)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([True, False], [0.0, 1.0]) == 0.0


@pytest.mark.parametrize(
    ("y", "s", "w"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], None),
        ([0, 0], [0.1, 0.2], None),
        ([0, 1, 2], [0.1, 0.2, 0.3], None),
        ([0, 1, 0.5], [0.1, 0.2, 0.3], None),
        ([0, 1, 1], [0.1, 0.2], None),
        ([0, 1], [0.1, 0.2], [1.0, 1.0, 1.0]),
        ([0, 1], [0.1, 0.2], [1.0, -1.0]),
        ([0, 1], [0.1, 0.2], [0.0, 1.0]),
        ([0, 1], [0.1, np.nan], None),
    ],
)
def test_roc_auc_errors(y, s, w) -> None:
    with pytest.raises(DataError):
        roc_auc(y, s, w)


def test_data_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.0, 1.0])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("weights", [False, True])
def test_log_loss_matches_sklearn(seed: int, weights: bool) -> None:
    y, _, w = _data(seed, weights=weights)
    p = np.random.default_rng(seed + 100).uniform(0.01, 0.99, size=y.shape[0])
    expected = sk_log_loss(y, p, sample_weight=w, labels=[0, 1])
    assert log_loss(y, p, w) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("weights", [False, True])
def test_log_loss_from_logits_equals_probabilities(weights: bool) -> None:
    y, _, w = _data(3, weights=weights)
    z = np.random.default_rng(4).normal(scale=4.0, size=y.shape[0])
    got = log_loss(y, z, w, from_logits=True)
    assert got == pytest.approx(log_loss(y, _sigmoid(z), w), rel=1e-12, abs=1e-12)


def test_log_loss_from_extreme_logits_is_finite() -> None:
    y = np.array([1, 0, 1, 0])
    z = np.array([1000.0, -1000.0, -1000.0, 1000.0])
    got = log_loss(y, z, from_logits=True)
    assert math.isfinite(got)
    assert got == pytest.approx(500.0)  # two rows lose 0, two lose 1000
    assert log_loss([1, 0], [1000.0, -1000.0], from_logits=True) == 0.0


def test_log_loss_clips_probabilities() -> None:
    got = log_loss([1, 0], [0.0, 1.0])
    assert math.isfinite(got)
    # 1 - 1e-15 is not exact in float64, hence the loose tolerance.
    assert got == pytest.approx(-math.log(1e-15), rel=1e-4)


def test_log_loss_errors() -> None:
    with pytest.raises(DataError):
        log_loss([0, 2], [0.5, 0.5])
    with pytest.raises(DataError):
        log_loss([0, 1], [0.5])
    with pytest.raises(DataError):
        log_loss([0, 1], [0.5, 1.5])


def _loop_grouped_auc(y, s, g, w, weighting):
    aucs, sizes = [], []
    for key in np.unique(g):
        m = g == key
        wm = None if w is None else w[m]
        pos = np.sum(y[m] if wm is None else wm * y[m])
        neg = np.sum(1 - y[m] if wm is None else wm * (1 - y[m]))
        if pos == 0 or neg == 0:
            continue
        aucs.append(roc_auc_score(y[m], s[m], sample_weight=wm))
        sizes.append(m.sum() if wm is None else wm.sum())
    if not aucs:
        return math.nan
    if weighting == "uniform":
        return float(np.mean(aucs))
    return float(np.dot(sizes, aucs) / np.sum(sizes))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("weighting", ["rows", "uniform"])
def test_grouped_auc_matches_loop(seed: int, ties: bool, weights: bool, weighting: str) -> None:
    y, s, w = _data(seed, n=3000, ties=ties, weights=weights)
    g = np.random.default_rng(seed + 10).integers(0, 200, size=y.shape[0])
    expected = _loop_grouped_auc(y, s, g, w, weighting)
    # Rows arrive shuffled with respect to groups; some groups have one class only.
    assert grouped_auc(y, s, g, w, weighting=weighting) == pytest.approx(expected, abs=1e-12)


def test_grouped_auc_string_groups_and_single_class_groups() -> None:
    y = np.array([1, 0, 1, 1, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.5, 0.7, 0.8, 0.2, 0.2])
    g = np.array(["a", "a", "b", "b", "c", "c", "c"])
    # a: 1.0 (2 rows); b: single class, skipped; c: pos 0.2 vs negs 0.8, 0.2 -> 0.25 (3 rows)
    assert grouped_auc(y, s, g, weighting="uniform") == pytest.approx((1.0 + 0.25) / 2)
    assert grouped_auc(y, s, g) == pytest.approx((2 * 1.0 + 3 * 0.25) / 5)


def test_grouped_auc_nan_without_mixed_group() -> None:
    assert math.isnan(grouped_auc([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]))
    assert math.isnan(grouped_auc([], [], []))


def test_grouped_auc_errors() -> None:
    with pytest.raises(DataError):
        grouped_auc([0, 1, 2], [0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(DataError):
        grouped_auc([0, 1], [0.1, 0.2], [1, 1, 1])
    with pytest.raises(ValueError, match="weighting"):
        grouped_auc([0, 1], [0.1, 0.2], [1, 1], weighting="groups")  # type: ignore[arg-type]


def test_evaluate() -> None:
    y, s, w = _data(5, weights=True)
    g = np.random.default_rng(6).integers(0, 50, size=y.shape[0])
    out = evaluate(y, s, sample_weight=w, groups={"user": g})
    assert set(out) == {"auc", "log_loss", "n_rows", "auc@user"}
    assert out["auc"] == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    expected_ll = sk_log_loss(y, _sigmoid(s), sample_weight=w)
    assert out["log_loss"] == pytest.approx(expected_ll, abs=1e-12)
    assert out["n_rows"] == y.shape[0]
    assert out["auc@user"] == pytest.approx(grouped_auc(y, s, g, w), abs=0)
    assert set(evaluate(y, s)) == {"auc", "log_loss", "n_rows"}


def _brute_force_auc(y, s, w):
    """Sum over every (positive, negative) pair, written independently of gdmix."""
    y = np.asarray(y)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    wins = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    pair_w = w[pos][:, None] * w[neg][None, :]
    return float((wins * pair_w).sum() / pair_w.sum())


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("weights", ["none", "random", "constant", "some_zero"])
def test_binary_evaluator_matches_sklearn_and_brute_force(ties: bool, weights: str) -> None:
    rng = np.random.default_rng(11)
    n = 700
    y = rng.integers(0, 2, size=n)
    w = {
        "none": None,
        "random": rng.uniform(0.0, 3.0, size=n),
        "constant": np.full(n, 2.5),
        "some_zero": rng.uniform(0.0, 1.0, size=n) * (rng.uniform(size=n) < 0.7),
    }[weights]
    evaluator = BinaryEvaluator(y, w)
    for k in range(4):  # the same labels and weights, new scores each time
        s = rng.normal(size=n) + 0.3 * k * y
        if ties:
            s = np.round(s, 1)
        expected = roc_auc_score(y, s, sample_weight=w)
        assert evaluator.auc(s) == pytest.approx(expected, abs=1e-12)
        brute = _brute_force_auc(y, s, np.ones(n) if w is None else w)
        assert evaluator.auc(s) == pytest.approx(brute, abs=1e-12)
        expected_ll = sk_log_loss(y, _sigmoid(s), sample_weight=w)
        assert evaluator.log_loss(s) == pytest.approx(expected_ll, rel=1e-12, abs=1e-12)


def test_unweighted_auc_is_an_exact_ratio_of_pair_counts() -> None:
    # 3 positives, 4 negatives: pairs won 2 + 3.5 + 4 = 9.5 of 12 -> 19/24 exactly.
    y = [1, 0, 1, 0, 0, 1, 0]
    s = [0.5, 0.5, 0.9, 0.1, 0.2, 0.7, 0.8]
    assert roc_auc(y, s) == 19 / 24
    assert BinaryEvaluator(y).auc(np.asarray(s)) == 19 / 24


def test_binary_evaluator_errors() -> None:
    with pytest.raises(DataError, match="both classes"):
        BinaryEvaluator([1, 1, 1]).auc([0.1, 0.2, 0.3])
    with pytest.raises(DataError):
        BinaryEvaluator([0, 1]).auc([0.1, np.inf])
    with pytest.raises(DataError):
        BinaryEvaluator([0, 1]).auc([0.1])
    with pytest.raises(DataError, match="positive weight"):
        BinaryEvaluator([0, 1], [0.0, 0.0]).log_loss([0.1, 0.2])
    with pytest.raises(DataError):
        BinaryEvaluator([0, 1], [1.0, -1.0])

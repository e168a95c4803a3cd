"""Scores written by the random-effect solver as it solves (``row_scores``) are the
floats that scoring gives: every row, whichever kernel solved its entity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gdmix.config import parse_config
from gdmix.model import make_coordinate
from gdmix.solvers.newton import score_entities, score_rest, solve_entities


def _problem(seed: int, n_entities: int = 300, d: int = 4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 40, size=n_entities)
    sizes[:3] = [2, 1500, 1]  # entity 1 for the subspace kernel (over 1024 rows)
    codes = rng.permutation(np.repeat(np.arange(n_entities), sizes)).astype(np.int64)
    n = len(codes)
    X = rng.normal(size=(n, d)).astype(dtype)
    z = np.einsum("ij,ij->i", X, rng.normal(size=(n_entities, d))[codes])
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(float)
    perm = np.argsort(codes, kind="stable").astype(np.int64)
    starts = np.zeros(n_entities + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(codes, minlength=n_entities))
    return X, codes, y, rng.uniform(0.5, 2, n), rng.normal(0, 0.3, n), perm, starts


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("max_iter", [50, 3])
def test_written_scores_are_the_scores_of_the_solution(dtype, max_iter):
    X, codes, y, s, o, perm, starts = _problem(0, dtype=dtype)
    n_ent, d = len(starts) - 1, X.shape[1]
    rng = np.random.default_rng(1)
    coef, icpt = rng.normal(size=(n_ent, d)), rng.normal(size=n_ent)  # warm start
    solved = np.arange(n_ent)[np.arange(n_ent) % 5 != 0]  # every fifth kept as it is
    out = np.full(len(codes), np.nan)
    stats = solve_entities(X, perm, starts, y, s, o, solved, coef, icpt, l2=1.0,
                           intercept_l2=0.5, max_iter=max_iter, row_scores=out)  # fmt: skip
    scored = stats.scored
    assert scored is not None
    assert not scored[np.arange(n_ent) % 5 == 0].any()  # not solved: not written
    assert not scored[1]  # the big entity: the subspace kernel's
    if max_iter == 3:  # lanes stopped before converging are solved again: not written
        assert scored.sum() < len(solved) - 1
    else:
        assert scored.sum() == len(solved) - 1
    expected = score_entities(X, codes, coef, icpt)
    rows = scored[codes]
    np.testing.assert_array_equal(out[rows], expected[rows])
    assert np.isnan(out[~rows]).all()
    score_rest(X, codes, coef, icpt, scored, out)
    np.testing.assert_array_equal(out, expected)


def test_rows_of_unseen_entities_score_zero():
    X, codes, *_ = _problem(2, n_entities=20)
    codes = codes.copy()
    codes[::7] = -1
    coef, icpt = np.ones((20, X.shape[1])), np.ones(20)
    out = np.full(len(codes), np.nan)
    score_rest(X, codes, coef, icpt, np.zeros(20, dtype=bool), out)
    np.testing.assert_array_equal(out, score_entities(X, codes, coef, icpt))
    assert (out[::7] == 0).all()


def _frame(seed: int = 3, n_users: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 30, size=n_users)
    user = rng.permutation(np.repeat(np.arange(n_users), sizes))
    n = len(user)
    x = rng.normal(size=(n, 3))
    logit = x @ np.array([0.5, -0.3, 0.2]) + rng.normal(0, 1, n_users)[user]
    label = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"user": user, "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2],
                         "label": label})  # fmt: skip


def _coordinate(**options):
    config = parse_config({
        "coordinates": [{"name": "u", "type": "random", "entity": "user", "l2": 1.0,
                         "features": {"numeric": ["x0", "x1", "x2"]}, **options}],
    })  # fmt: skip
    coord = make_coordinate(config.coordinates[0])
    coord.keep_fit_scores = True  # as the trainer sets it
    return coord


@pytest.mark.parametrize("options", [{}, {"min_rows": 5}, {"variance": "simple"}])
def test_a_fit_hands_over_the_training_scores_once(options):
    frame = _frame()
    coord = _coordinate(**options)
    coord.build(frame)
    design = coord.design(frame, "training data", training=True)
    y = frame.label.to_numpy(dtype=float)
    offset = np.random.default_rng(4).normal(0, 0.5, len(frame))
    coord.fit(design, y, np.ones(len(frame)), offset, l2=1.0)
    written = coord.take_fit_scores(design)
    assert written is not None
    np.testing.assert_array_equal(written, coord.score(design))
    if "min_rows" in options:  # entities without a model score 0
        assert (~coord.has_model).any()
        assert (written[~coord.has_model[design.codes]] == 0).all()
    assert coord.take_fit_scores(design) is None  # taken once


def test_no_hand_over_when_it_cannot_be_trusted():
    frame = _frame()
    y = frame.label.to_numpy(dtype=float)
    ones, zeros = np.ones(len(frame)), np.zeros(len(frame))

    sampled = _coordinate(max_rows=5)  # the solver sees a sample of the big entities' rows
    sampled.build(frame)
    design = sampled.design(frame, "training data", training=True)
    sampled.fit(design, y, ones, zeros, l2=1.0)
    assert sampled.take_fit_scores(design) is None

    coord = _coordinate()
    coord.build(frame)
    design = coord.design(frame, "training data", training=True)
    coord.fit(design, y, ones, zeros, l2=1.0)
    other = coord.design(frame, "training data", training=True)
    assert coord.take_fit_scores(other) is None  # another design
    coord.fit(design, y, ones, zeros, l2=1.0)
    coord.set_state(coord.get_state())  # coefficients replaced after the fit
    assert coord.take_fit_scores(design) is None
    coord.keep_fit_scores = False  # not asked for: nothing kept
    coord.fit(design, y, ones, zeros, l2=1.0)
    assert coord._fit_scores is None


def test_training_with_handed_over_scores_matches_the_models_scores():
    """End to end: the training-set log loss the trainer reports after the random
    effect's update (from the scores the solver wrote) is the one of the saved model's
    scores."""
    import gdmix
    from gdmix.metrics import log_loss

    frame = _frame(5)
    config = parse_config({
        "coordinates": [
            {"name": "fe", "type": "fixed", "features": {"numeric": ["x0", "x1"]}},
            {"name": "u", "type": "random", "entity": "user", "l2": 1.0,
             "features": {"numeric": ["x0", "x1", "x2"]}},
        ],
        "training": {"n_passes": 2, "progress": False, "train_metrics": "always"},
    })  # fmt: skip
    records = []
    model = gdmix.fit(config, frame, callbacks=[records.append])
    last = [r for r in records if r["coordinate"] == "u"][-1]
    total = model.score(frame)["total"].to_numpy()
    expected = log_loss(frame.label.to_numpy(dtype=float), 1 / (1 + np.exp(-total)))
    assert last["train_log_loss"] == pytest.approx(expected, rel=1e-12)
    assert not model["u"].keep_fit_scores  # only while the trainer runs

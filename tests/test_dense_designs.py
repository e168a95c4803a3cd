"""Dense feature blocks through the random-effect solvers: the same solutions as CSR.

A numeric shard reaches the solvers as a dense block (rows sorted by entity for
training, a view of the table for scoring). Every kernel must give what it gives on the
CSR form of the same matrix: lockstep groups, big entities (subspace kernel), wide shards
with CSR coefficient storage, variances, and scoring. The entity codes of the fast
integer path must equal pandas' ``get_indexer``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gdmix.config import RandomEffectConfig
from gdmix.data import entity_keys
from gdmix.data.entity_keys import distinct_sorted, key_codes
from gdmix.effects import random_effect
from gdmix.effects.random_effect import RandomEffect
from gdmix.solvers import newton
from gdmix.solvers.newton import score_entities, solve_entities


def _problem(seed, n_entities, d, density, max_rows=40):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_rows + 1, size=n_entities)
    codes = rng.permutation(np.repeat(np.arange(n_entities), sizes)).astype(np.int64)
    n = len(codes)
    X = rng.normal(size=(n, d)) * (rng.uniform(size=(n, d)) < density)
    z = (X * rng.normal(size=(n_entities, d))[codes]).sum(axis=1)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    s = rng.uniform(0.2, 3.0, size=n)
    o = rng.normal(size=n) * 0.5
    perm = np.argsort(codes, kind="stable").astype(np.int64)
    starts = np.zeros(n_entities + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(codes, minlength=n_entities))
    return X, codes, y, s, o, perm, starts


def _solve(X, codes, y, s, o, perm, starts, d, variance):
    n_entities = len(starts) - 1
    wide = d > 256
    coef = sp.csr_matrix((n_entities, d)) if wide else np.zeros((n_entities, d))
    icpt = np.zeros(n_entities)
    variances = None
    if variance != "none":
        variances = (sp.csr_matrix((n_entities, d)) if wide else np.zeros((n_entities, d)),
                     np.zeros(n_entities))  # fmt: skip
    stats = solve_entities(
        X, perm, starts, y, s, o, np.arange(n_entities), coef, icpt, l2=0.7, intercept_l2=0.3,
        variance=variance, variances=variances,
    )  # fmt: skip
    if stats.coef is not None:
        coef = stats.coef
    var = stats.variance if stats.variance is not None else (variances or (None,))[0]
    return coef, icpt, var, stats


def _dense(m):
    return m.toarray() if sp.issparse(m) else m


@pytest.mark.parametrize("threaded", [False, True], ids=["serial", "threaded"])
@pytest.mark.parametrize(
    ("d", "density", "max_rows", "variance"),
    [(8, 0.6, 40, "none"), (8, 0.6, 40, "full"), (5, 0.9, 1500, "simple"),
     (40, 0.3, 30, "simple"), (300, 0.02, 30, "none")],
    ids=["lockstep", "lockstep-variance", "big-entities", "subspace", "wide-csr-coef"],
)  # fmt: skip
def test_dense_block_solves_like_csr(threaded, d, density, max_rows, variance, monkeypatch):
    monkeypatch.setattr(newton, "_threaded", lambda n_rows: threaded)
    n_entities = 12 if max_rows > 1000 else 150
    X, codes, y, s, o, perm, starts = _problem(d, n_entities, d, density, max_rows)
    a = _solve(sp.csr_matrix(X), codes, y, s, o, perm, starts, d, variance)
    b = _solve(X, codes, y, s, o, perm, starts, d, variance)
    assert a[3].n_converged == b[3].n_converged == n_entities
    np.testing.assert_array_equal(_dense(b[0]), _dense(a[0]))
    np.testing.assert_array_equal(b[1], a[1])
    if variance != "none":
        np.testing.assert_array_equal(_dense(b[2]), _dense(a[2]))
    # Scoring: CSR, C-ordered and Fortran-ordered blocks give the same scores.
    expected = score_entities(sp.csr_matrix(X), codes, a[0], a[1])
    for block in (X, np.asfortranarray(X)):
        np.testing.assert_array_equal(score_entities(block, codes, b[0], b[1]), expected)
    # Scores of a design sorted by entity, written back into table order.
    np.testing.assert_array_equal(
        score_entities(X[perm], codes[perm], b[0], b[1], rows=perm), expected
    )
    # A float32 block holds the float32-rounded values: the same as CSR of those values.
    X32 = X.astype(np.float32)
    c = _solve(X32, codes, y, s, o, perm, starts, d, variance)
    e = _solve(sp.csr_matrix(X32.astype(np.float64)), codes, y, s, o, perm, starts, d, variance)
    np.testing.assert_array_equal(_dense(c[0]), _dense(e[0]))


def test_random_effect_numeric_shard_trains_on_the_table_block_in_place():
    X, codes, y, s, o, _, _ = _problem(7, 200, 6, 0.8)
    ids = np.array([f"u{c % 37}-{c}" for c in codes], dtype=object)  # string ids
    frame = pd.DataFrame({f"x{j}": X[:, j] for j in range(6)}).assign(user=ids)
    config = RandomEffectConfig(name="re", entity="user", l2=1.0,
                                features={"numeric": [f"x{j}" for j in range(6)]})  # fmt: skip
    coord = RandomEffect(config)
    coord.build(frame)
    design = coord.design(frame, "t", training=True)
    assert isinstance(design.X, np.ndarray) and design.order is None
    assert np.shares_memory(design.X, frame["x0"].to_numpy())  # no copy of the features
    np.testing.assert_array_equal(design.X, X)
    codes = coord._codes(frame["user"])
    assert np.array_equal(design.perm, np.argsort(codes, kind="stable"))
    assert np.array_equal(np.diff(design.starts), np.bincount(codes))
    coord.fit(design, y, s, o, l2=1.0)
    # The same coordinate on the CSR form of the design, rows sorted by entity.
    order = np.argsort(codes, kind="stable")
    coef = np.zeros_like(coord.coef)
    icpt = np.zeros_like(coord.intercept)
    solve_entities(sp.csr_matrix(X[order]), np.arange(len(order)), design.starts, y[order],
                   s[order], o[order], np.arange(len(coef)), coef, icpt,
                   l2=1.0, intercept_l2=1.0)  # fmt: skip
    np.testing.assert_array_equal(coord.coef, coef)
    np.testing.assert_array_equal(coord.intercept, icpt)
    scores = coord.score(coord.design(frame, "t"))
    expected = (X * coef[coord._codes(frame["user"])]).sum(axis=1) + icpt[coord._codes(ids)]
    np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "ids",
    [np.arange(1000, 5000, 3), np.array([-5, 2**40, 7]), np.array([2**62, -(2**62)])],
    ids=["compact", "wide", "huge"],
)
@pytest.mark.parametrize("threaded", [False, True], ids=["serial", "threaded"])
def test_integer_key_codes_equal_get_indexer(ids, threaded, monkeypatch):
    if threaded:  # the prefetching lookup on every thread, even on these few keys
        monkeypatch.setattr(entity_keys, "_PARALLEL_MIN_KEYS", 10)
    rng = np.random.default_rng(0)
    keys = rng.choice(np.concatenate([ids, ids + 1, [0, -1]]), size=5000).astype(np.int64)
    index = pd.Index(np.sort(ids).astype(np.int64))
    assert np.array_equal(key_codes(index, keys), index.get_indexer(keys))
    shuffled = pd.Index(rng.permutation(ids).astype(np.int64))  # not sorted: still exact
    assert np.array_equal(key_codes(shuffled, keys), shuffled.get_indexer(keys))
    distinct = distinct_sorted(keys)
    assert distinct.equals(pd.Index(np.unique(keys)))
    words = np.array([f"k{k}" for k in keys], dtype=object)
    assert distinct_sorted(words).equals(pd.Index(np.unique(words)))


def test_the_design_reuses_the_codes_of_the_table_built_on_only(monkeypatch):
    import pickle

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"user": rng.integers(100, 160, size=400), "x": rng.normal(size=400)})
    other = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    config = RandomEffectConfig(name="per_user", entity="user", features={"numeric": ["x"]})
    coord = RandomEffect(config)
    coord.build(frame)
    pickle.loads(pickle.dumps(coord))  # the kept codes (a weak reference) do not travel
    looked_up: list[int] = []
    real = coord._codes
    monkeypatch.setattr(coord, "_codes", lambda ids: looked_up.append(len(ids)) or real(ids))
    sorts: list[int] = []
    real_sort = random_effect.counting_sort
    monkeypatch.setattr(random_effect, "counting_sort",
                        lambda codes, n: sorts.append(n) or real_sort(codes, n))  # fmt: skip
    expected = coord.entity_ids.get_indexer(frame["user"])
    design = coord.design(frame, "t", training=True)
    np.testing.assert_array_equal(design.codes, expected)
    assert looked_up == [] and sorts == []  # codes and grouping taken from build
    np.testing.assert_array_equal(design.perm, np.argsort(expected, kind="stable"))
    np.testing.assert_array_equal(np.diff(design.starts), np.bincount(expected))
    np.testing.assert_array_equal(coord.design(frame, "t").codes, expected)
    assert looked_up == [400]  # taken once only
    np.testing.assert_array_equal(
        coord.design(other, "t").codes, coord.entity_ids.get_indexer(other["user"])
    )
    assert looked_up == [400, 400]

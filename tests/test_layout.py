"""Tests of gdmix.data.layout: entity grouping and deterministic down-sampling."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from gdmix.data import layout
from gdmix.data.layout import (
    counting_sort,
    counting_sort_positions,
    downsample_weights,
    group_rows,
    take,
)


def _ids(kind, seed=0, n=2000, n_entities=150):
    rng = np.random.default_rng(seed)
    # Skewed entity sizes: a few large entities, many small ones.
    raw = np.minimum(rng.zipf(1.6, size=n), n_entities) - 1
    pool = rng.permutation(n_entities * 7)[:n_entities] - 300
    values = pool[raw]
    if kind == "str":
        return pd.Series([f"user_{v}" for v in values])
    if kind == "ndarray":
        return values.astype(np.int64)
    return pd.Series(values)


@pytest.mark.parametrize("kind", ["str", "int", "ndarray"])
def test_group_rows(kind):
    ids = _ids(kind)
    arr = np.asarray(ids)
    layout = group_rows(ids)
    n = len(arr)
    # Entity ids: the sorted distinct values; codes point into them.
    assert list(layout.entity_ids) == sorted(set(arr.tolist()))
    assert layout.n_entities == len(set(arr.tolist()))
    assert np.array_equal(np.asarray(layout.entity_ids)[layout.codes], arr)
    # perm is a stable sort of the rows by entity id.
    assert layout.perm.dtype == np.int64 and layout.starts.dtype == np.int64
    assert np.array_equal(layout.perm, np.argsort(arr, kind="stable"))
    assert np.array_equal(np.sort(layout.perm), np.arange(n))
    # starts/counts agree with pandas value_counts.
    vc = pd.Series(arr).value_counts().sort_index()
    assert np.array_equal(layout.counts, vc.to_numpy())
    assert layout.starts[0] == 0 and layout.starts[-1] == n
    for e, entity in enumerate(layout.entity_ids):
        seg = layout.perm[layout.starts[e] : layout.starts[e + 1]]
        assert np.array_equal(seg, np.flatnonzero(arr == entity))


def test_group_rows_single_entity_and_order():
    layout = group_rows(pd.Series(["b", "a", "b", "c", "a", "b"]))
    assert list(layout.entity_ids) == ["a", "b", "c"]
    assert layout.codes.tolist() == [1, 0, 1, 2, 0, 1]
    assert layout.perm.tolist() == [1, 4, 0, 2, 5, 3]
    assert layout.starts.tolist() == [0, 2, 5, 6]
    one = group_rows(np.array([7, 7, 7]))
    assert one.perm.tolist() == [0, 1, 2] and one.starts.tolist() == [0, 3]


@pytest.mark.parametrize("max_rows", [1, 3, 10, 50])
@pytest.mark.parametrize("kind", ["str", "int"])
def test_downsample_weights(max_rows, kind):
    ids = _ids(kind, seed=1)
    layout = group_rows(ids)
    arr = np.asarray(ids)
    perm, starts, mult = downsample_weights(layout, max_rows, seed=42)
    counts = layout.counts
    kept = np.minimum(counts, max_rows)
    assert perm.dtype == np.int64 and starts.dtype == np.int64
    assert np.array_equal(np.diff(starts), kept)
    assert starts[0] == 0 and starts[-1] == kept.sum() == len(perm)
    assert len(np.unique(perm)) == len(perm)
    assert np.array_equal(np.sort(perm), np.flatnonzero(mult > 0))
    for e, entity in enumerate(layout.entity_ids):
        seg = perm[starts[e] : starts[e + 1]]
        rows = np.flatnonzero(arr == entity)
        assert np.all(arr[seg] == entity)
        assert np.all(np.diff(seg) > 0)  # kept rows stay in table order
        assert len(seg) == min(len(rows), max_rows)
        # Kept rows are re-weighted by n / kept; the entity's total weight is kept.
        assert np.allclose(mult[seg], len(rows) / len(seg), rtol=1e-15)
        assert mult[rows].sum() == pytest.approx(len(rows), rel=1e-12)
        if len(rows) <= max_rows:
            assert np.array_equal(seg, rows) and np.all(mult[rows] == 1.0)
    # Dropped rows get weight 0.
    dropped = np.setdiff1d(np.arange(len(arr)), perm)
    assert np.all(mult[dropped] == 0.0)


def test_downsample_no_op_when_under_limit():
    layout = group_rows(_ids("int", seed=2))
    perm, starts, mult = downsample_weights(layout, int(layout.counts.max()), seed=3)
    assert np.array_equal(perm, layout.perm)
    assert np.array_equal(starts, layout.starts)
    assert np.all(mult == 1.0)


def test_downsample_deterministic_and_seeded():
    layout = group_rows(_ids("str", seed=4))
    a = downsample_weights(layout, 5, seed=7)
    b = downsample_weights(layout, 5, seed=7)
    c = downsample_weights(layout, 5, seed=8)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(a[1], c[1])  # same counts per entity
    assert not np.array_equal(a[0], c[0])  # different rows kept
    big = np.flatnonzero(layout.counts > 5)
    assert len(big) >= 2
    changed = [
        not np.array_equal(a[0][a[1][e] : a[1][e + 1]], c[0][c[1][e] : c[1][e + 1]]) for e in big
    ]
    assert sum(changed) >= len(big) // 2


def test_downsample_is_roughly_uniform_over_seeds():
    # One entity of 100 rows, keep 10: over 400 seeds, every row is kept about 40 times.
    layout = group_rows(np.zeros(100, dtype=np.int64))
    hits = np.zeros(100)
    for seed in range(400):
        perm, _, mult = downsample_weights(layout, 10, seed=seed)
        hits[perm] += 1
        assert np.all(mult[perm] == 10.0)
    assert hits.sum() == 4000
    assert hits.min() >= 15 and hits.max() <= 70
    # No positional bias: first and second halves are kept equally often.
    assert abs(hits[:50].sum() - hits[50:].sum()) < 300


@pytest.mark.parametrize("seed", [123456789, 2**63 + 5, -1])
def test_downsample_any_seed_without_warning(seed):
    layout = group_rows(_ids("int", seed=5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        perm, starts, mult = downsample_weights(layout, 4, seed=seed)
    assert np.array_equal(np.diff(starts), np.minimum(layout.counts, 4))
    assert np.array_equal(np.sort(perm), np.flatnonzero(mult > 0))


@pytest.mark.parametrize("threaded", [False, True], ids=["serial", "threaded"])
@pytest.mark.parametrize("n_groups", [1, 7, 500])
def test_counting_sort_equals_stable_argsort(n_groups, threaded, monkeypatch):
    if threaded:  # one run of rows per thread, even on this small table
        monkeypatch.setattr(layout, "_PARALLEL_MIN_ROWS", 10)
        monkeypatch.setattr(layout.numba, "get_num_threads", lambda: 3)
    rng = np.random.default_rng(n_groups)
    codes = rng.integers(0, n_groups, size=3000)
    order, starts = counting_sort(codes, n_groups + 3)  # trailing groups without rows
    assert np.array_equal(order, np.argsort(codes, kind="stable"))
    assert np.array_equal(np.diff(starts), np.bincount(codes, minlength=n_groups + 3))
    order2, starts2, positions = counting_sort_positions(codes, n_groups + 3)
    assert np.array_equal(order2, order) and np.array_equal(starts2, starts)
    assert np.array_equal(positions[order], np.arange(len(codes)))


@pytest.mark.parametrize("threaded", [False, True], ids=["serial", "threaded"])
def test_counting_sort_rejects_codes_out_of_range(threaded, monkeypatch):
    if threaded:
        monkeypatch.setattr(layout, "_PARALLEL_MIN_ROWS", 2)
        monkeypatch.setattr(layout.numba, "get_num_threads", lambda: 2)
    with pytest.raises(ValueError, match="codes"):
        counting_sort(np.array([0, 1, 2, 1, 3, 1]), 3)  # in the second run of rows
    with pytest.raises(ValueError, match="codes"):
        counting_sort(np.array([0, -1, 1, 2]), 3)
    order, starts = counting_sort(np.zeros(0, dtype=np.int64), 2)
    assert len(order) == 0 and starts.tolist() == [0, 0, 0]


def test_take_gathers_like_fancy_indexing(monkeypatch):
    monkeypatch.setattr(layout, "_PARALLEL_MIN_ROWS", 10)
    rng = np.random.default_rng(3)
    values = rng.normal(size=(5, 500))
    rows = rng.integers(0, 500, size=800)
    for k in (1, 3, 5):  # one pass of three columns, then the rest
        got = take(rows, *values[:k])
        assert len(got) == k
        for g, v in zip(got, values[:k], strict=True):
            assert np.array_equal(g, v[rows])

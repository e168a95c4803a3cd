"""Wide sparse shards: sparse (CSR) coefficient storage equals dense storage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import gdmix
from gdmix.config import parse_config
from gdmix.effects import random_effect, random_table
from gdmix.solvers.newton import solve_entities


def _wide(seed: int, n_entities: int = 150, d: int = 600, rows: int = 12):
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(n_entities), rows)
    pool = rng.integers(0, d, (n_entities, 8))
    cols = pool[codes[:, None], rng.integers(0, 8, (len(codes), 3))]
    X = sp.csr_matrix((rng.normal(size=cols.size), cols.ravel(),
                       np.arange(0, cols.size + 1, 3)), shape=(len(codes), d))  # fmt: skip
    X.sum_duplicates()
    y = (rng.random(len(codes)) < 0.5).astype(float)
    starts = np.arange(0, len(codes) + 1, rows)
    return X, y, np.arange(len(codes)), starts


def test_sparse_storage_matches_dense_storage():
    X, y, perm, starts = _wide(0)
    n, d = len(starts) - 1, X.shape[1]
    ones, zeros = np.ones(len(y)), np.zeros(len(y))
    dense, dense_b = np.zeros((n, d)), np.zeros(n)
    var_d, var_db = np.zeros((n, d)), np.zeros(n)
    solve_entities(X, perm, starts, y, ones, zeros, np.arange(n), dense, dense_b, l2=1.0,
                   intercept_l2=1.0, variance="full", variances=(var_d, var_db))  # fmt: skip
    icpt, var_b = np.zeros(n), np.zeros(n)
    stats = solve_entities(X, perm, starts, y, ones, zeros, np.arange(n), sp.csr_matrix((n, d)),
                           icpt, l2=1.0, intercept_l2=1.0, variance="full",
                           variances=(sp.csr_matrix((n, d)), var_b))  # fmt: skip
    np.testing.assert_allclose(stats.coef.toarray(), dense, atol=1e-12)
    np.testing.assert_allclose(icpt, dense_b, atol=1e-12)
    # Stored variances are the touched features'; the others are the prior's 1/l2.
    v = stats.variance.toarray()
    touched = v != 0
    np.testing.assert_allclose(v[touched], var_d[touched], rtol=1e-12)
    np.testing.assert_allclose(var_d[~touched], 1.0)
    assert stats.coef.nnz <= 8 * n  # at most the features each entity touches


def test_sparse_warm_start_and_untouched_entities():
    X, y, perm, starts = _wide(1)
    n, d = len(starts) - 1, X.shape[1]
    ones, zeros = np.ones(len(y)), np.zeros(len(y))
    first = solve_entities(X, perm, starts, y, ones, zeros, np.arange(n), sp.csr_matrix((n, d)),
                           np.zeros(n), l2=1.0, intercept_l2=1.0)  # fmt: skip
    icpt = np.zeros(n)
    solve_entities(X, perm, starts, y, ones, zeros, np.arange(n), sp.csr_matrix((n, d)), icpt,
                   l2=1.0, intercept_l2=1.0)  # fmt: skip
    again = solve_entities(X, perm, starts, y, ones, zeros, np.arange(0, n, 2), first.coef,
                           icpt, l2=1.0, intercept_l2=1.0)  # fmt: skip
    assert again.max_iter <= 1  # warm start from the solution
    np.testing.assert_allclose(again.coef.toarray(), first.coef.toarray(), atol=1e-9)
    odd = np.arange(1, n, 2)
    assert (again.coef[odd] != first.coef[odd]).nnz == 0  # untouched rows kept exactly


def _bag_frame(seed: int, n: int = 3000, n_users: int = 60, n_terms: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, n_users, n)
    bags = [[{"name": "t", "term": f"w{t}", "value": 1.0} for t in rng.integers(0, n_terms, 3)]
            for _ in range(n)]  # fmt: skip
    y = (rng.random(n) < 0.5).astype(int)
    return pd.DataFrame({"user": user, "terms": bags, "label": y})


def _cfg():
    return parse_config({
        "coordinates": [{"name": "u", "type": "random", "entity": "user", "l2": 1.0,
                         "features": {"bags": ["terms"]}, "variance": "simple"}],
        "training": {"progress": False},
    })  # fmt: skip


def test_wide_random_effect_through_fit_save_and_score(tmp_path, monkeypatch):
    frame = _bag_frame(2)
    model = gdmix.fit(_cfg(), frame)
    u = model["u"]
    assert sp.issparse(u.coef) and u.features.n_features > random_table.DENSE_MAX_FEATURES
    monkeypatch.setattr(random_effect, "DENSE_MAX_FEATURES", 10**6)
    dense = gdmix.fit(_cfg(), frame)
    monkeypatch.undo()
    np.testing.assert_allclose(u.coef.toarray(), dense["u"].coef, atol=1e-10)
    np.testing.assert_allclose(model.score(frame)["u"], dense.score(frame)["u"], atol=1e-10)
    model.save(tmp_path / "m")
    loaded = gdmix.GDMixModel.load(tmp_path / "m")
    assert sp.issparse(loaded["u"].coef)
    np.testing.assert_allclose(loaded.score(frame)["u"], model.score(frame)["u"], atol=1e-12)
    v, vd = loaded["u"].variance.toarray(), dense["u"].variance
    np.testing.assert_allclose(v[v != 0], vd[v != 0], rtol=1e-10)


def test_wide_shard_rejects_cohort_mode():
    raw = _cfg().model_dump()
    raw["coordinates"][0]["mode"] = "cohort"
    with pytest.raises(gdmix.ConfigError, match="dense coefficient storage"):
        gdmix.fit(parse_config(raw), _bag_frame(3))

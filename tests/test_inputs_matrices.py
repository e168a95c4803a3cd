"""Feature matrices beside the table: the same model as the equivalent bag column.

A bag column holding exactly the non-zeros of a sparse matrix (one ``(name, "", value)``
record per entry, names sorted as the matrix's columns) is the independent reference:
gdmix has encoded bags since its first version. Every comparison is to 1e-10.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import gdmix
from gdmix.config import parse_config
from gdmix.errors import ConfigError, DataError
from gdmix.training import _Trainer

N, D = 600, 25
NAMES = [f"w{j:02d}" for j in range(D)]  # sorted: a bag's keys come out in this order


def _data(seed: int = 0, n: int = N) -> tuple[pd.DataFrame, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    X = sp.random(n, D, density=0.15, random_state=seed + 1, format="csr")
    w = rng.normal(0, 1.5, D)
    user = rng.integers(0, 25, n)
    bias = rng.normal(0, 1, 25)
    x1 = rng.normal(size=n)
    logit = X @ w + 0.5 * x1 + bias[user]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame({"label": y, "user": user, "x1": x1}), X


def _as_bag(X: sp.csr_matrix) -> list[list[dict]]:
    out = []
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        out.append([{"name": NAMES[j], "term": "", "value": float(v)}
                    for j, v in zip(X.indices[lo:hi], X.data[lo:hi], strict=True)])  # fmt: skip
    return out


def _config(bag: bool, l2=0.5, numeric=(), n_passes: int = 2) -> gdmix.GDMixConfig:
    feats = {"bags": ["bag"]} if bag else {}
    fixed = {"numeric": list(numeric), **feats}
    return parse_config(
        {
            "coordinates": [
                {"name": "g", "type": "fixed", "l2": l2, "features": fixed},
                {"name": "u", "type": "random", "entity": "user", "l2": 2.0, "features": feats,
                 "tol": 1e-12},
            ],
            "training": {"n_passes": n_passes, "progress": False, "tol": 0.0},
        }
    )  # fmt: skip


def _random_coefs(model: gdmix.GDMixModel) -> np.ndarray:
    coef = model["u"].coef
    return coef.toarray() if sp.issparse(coef) else coef


def test_sparse_matrix_equals_bag_column() -> None:
    frame, X = _data()
    by_matrix = gdmix.fit(
        _config(False), frame, features={"g": X, "u": X}, feature_names={"g": NAMES, "u": NAMES}
    )
    by_bag = gdmix.fit(_config(True), frame.assign(bag=_as_bag(X)))
    np.testing.assert_allclose(by_matrix["g"].coef, by_bag["g"].coef, rtol=0, atol=1e-10)
    assert abs(by_matrix["g"].intercept - by_bag["g"].intercept) < 1e-10
    np.testing.assert_allclose(_random_coefs(by_matrix), _random_coefs(by_bag), atol=1e-10)
    np.testing.assert_allclose(by_matrix["u"].intercept, by_bag["u"].intercept, atol=1e-10)
    test, Xt = _data(seed=5, n=300)
    s_matrix = by_matrix.score(
        test, features={"g": Xt, "u": Xt}, feature_names={"g": NAMES, "u": NAMES}
    )
    s_bag = by_bag.score(test.assign(bag=_as_bag(Xt)))
    np.testing.assert_allclose(s_matrix["total"], s_bag["total"], rtol=0, atol=1e-10)
    # The coefficient table names the matrix's columns.
    table = by_matrix.coefficient_table("g")
    assert table["feature"].tolist()[1:] == NAMES


def test_table_columns_and_matrix_with_validation_search() -> None:
    """A numeric column of the table plus a matrix, an l2 searched on validation."""
    frame, X = _data()
    val, Xv = _data(seed=3, n=300)
    cfg_m, cfg_b = _config(False, [4.0, 0.5], ["x1"]), _config(True, [4.0, 0.5], ["x1"])
    by_matrix = gdmix.fit(
        cfg_m, frame, val, features={"g": X, "u": X}, validation_features={"g": Xv, "u": Xv},
        feature_names={"g": NAMES, "u": NAMES},
    )  # fmt: skip
    by_bag = gdmix.fit(cfg_b, frame.assign(bag=_as_bag(X)), val.assign(bag=_as_bag(Xv)))
    assert by_matrix.metrics["params"] == by_bag.metrics["params"]
    assert by_matrix["g"].features.feature_names() == ["x1", *NAMES]
    np.testing.assert_allclose(by_matrix["g"].coef, by_bag["g"].coef, rtol=0, atol=1e-10)
    assert by_matrix.metrics["validation"]["auc"] == pytest.approx(
        by_bag.metrics["validation"]["auc"], abs=1e-12
    )


def test_the_solver_gets_the_matrix_itself() -> None:
    """A canonical float64 CSR matrix reaches the fixed effect as it is: not copied,
    not densified; other forms become one CSR matrix of the same entries."""
    frame, X = _data()
    trainer = _Trainer(_config(False), frame, None, [], matrices=_matrices(frame, X))
    assert trainer.train.designs["g"] is X
    design_u = trainer.train.designs["u"].X
    assert sp.isspmatrix_csr(design_u) and design_u.nnz == X.nnz
    X32 = sp.coo_matrix(X, dtype=np.float32)
    trainer = _Trainer(_config(False), frame, None, [], matrices=_matrices(frame, X32))
    design = trainer.train.designs["g"]
    assert sp.isspmatrix_csr(design) and design.dtype == np.float64 and design.nnz == X.nnz
    assert X32.dtype == np.float32  # the caller's matrix is untouched


def _matrices(frame: pd.DataFrame, X) -> dict:
    from gdmix.data.matrices import feature_matrices

    return feature_matrices({"g": X, "u": X}, None, len(frame), "training data")


def test_dense_array_and_sparse_dataframe_give_the_same_model() -> None:
    frame, X = _data()
    cfg = _config(False, n_passes=1)
    ref = gdmix.fit(cfg, frame, features={"g": X, "u": X}, feature_names={"g": NAMES, "u": NAMES})
    dense = gdmix.fit(cfg, frame, features={"g": X.toarray(), "u": X.toarray()},
                      feature_names={"g": NAMES, "u": NAMES})  # fmt: skip
    sdf = pd.DataFrame.sparse.from_spmatrix(X, columns=NAMES)
    from_df = gdmix.fit(cfg, frame, features={"g": sdf, "u": sdf})
    for model in (dense, from_df):
        np.testing.assert_allclose(model["g"].coef, ref["g"].coef, rtol=0, atol=1e-12)
        assert model["g"].features.matrix == NAMES


def test_saved_model_scores_matrices_by_column_name(tmp_path) -> None:
    frame, X = _data()
    names = {"g": NAMES, "u": NAMES}
    model = gdmix.fit(
        _config(False, n_passes=1), frame, features={"g": X, "u": X}, feature_names=names
    )
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "coordinates" / "g" / "features.json").read_text())
    assert saved["matrix"] == NAMES
    loaded = gdmix.GDMixModel.load(tmp_path / "m")
    expected = model.score(frame, features={"g": X, "u": X}, feature_names=names)["total"]
    again = loaded.score(frame, features={"g": X, "u": X}, feature_names=names)["total"]
    np.testing.assert_allclose(again, expected, rtol=0, atol=1e-12)
    # The same columns in another order are put back in the model's order.
    perm = np.random.default_rng(0).permutation(D)
    shuffled = [NAMES[j] for j in perm]
    Xp = X[:, perm]
    again = loaded.score(
        frame, features={"g": Xp, "u": Xp}, feature_names={"g": shuffled, "u": shuffled}
    )
    np.testing.assert_allclose(again["total"], expected, rtol=0, atol=1e-12)
    # Without names the columns are taken in the model's order.
    np.testing.assert_allclose(
        loaded.score(frame, features={"g": X, "u": X})["total"], expected, rtol=0, atol=1e-12
    )
    with pytest.raises(DataError, match="has 24 columns but the model 25"):
        loaded.score(frame, features={"g": X[:, 1:], "u": X[:, 1:]})
    other = [*NAMES[:-1], "zzz"]
    with pytest.raises(
        DataError, match=r"columns differ from the model's.*missing \['w24'\].*\['zzz'\]"
    ):
        loaded.score(frame, features={"g": X, "u": X}, feature_names={"g": other, "u": other})
    with pytest.raises(DataError, match="trained on a feature matrix of 25 columns"):
        loaded.score(frame)
    metrics = loaded.evaluate(frame, features={"g": X, "u": X}, feature_names=names)
    assert metrics["auc"] == pytest.approx(model.metrics["train"]["auc"], abs=1e-12)


def test_wrong_matrix_inputs_give_one_clear_line() -> None:
    frame, X = _data()
    cfg = _config(False, n_passes=1)
    with pytest.raises(TypeError, match=r"features must be a dict mapping coordinate names"):
        gdmix.fit(cfg, frame, features=X)
    with pytest.raises(
        TypeError, match=r"features\['g'\] \(training data\) must be a scipy sparse"
    ):
        gdmix.fit(cfg, frame, features={"g": "text"})
    with pytest.raises(DataError, match=r"has 599 rows but the table has 600"):
        gdmix.fit(cfg, frame, features={"g": X[:-1]})
    with pytest.raises(ConfigError, match=r"\['glob'\] that are not coordinates"):
        gdmix.fit(cfg, frame, features={"glob": X})
    bad = X.copy()
    bad.data[3] = np.nan
    with pytest.raises(DataError, match="values must be finite"):
        gdmix.fit(cfg, frame, features={"g": bad})
    with pytest.raises(TypeError, match="feature_names must be a dict mapping coordinate"):
        gdmix.fit(cfg, frame, features={"g": X}, feature_names=NAMES)
    with pytest.raises(DataError, match="one name per column"):
        gdmix.fit(cfg, frame, features={"g": X}, feature_names={"g": NAMES[:3]})
    with pytest.raises(TypeError, match=r"pass a feature matrix beside the table, as features="):
        gdmix.fit(cfg, X)
    with pytest.raises(
        TypeError, match=r"must be a pandas DataFrame, a pyarrow Table, or the path"
    ):
        gdmix.fit(cfg, [1, 2, 3])
    dask = parse_config({**cfg.model_dump(mode="json"), "training": {"engine": "dask"}})
    with pytest.raises(ConfigError, match=r"need training\.engine: local"):
        gdmix.fit(dask, frame, features={"g": X})
    val, _ = _data(seed=2, n=100)
    with pytest.raises(ConfigError, match="validation_features must give a matrix for the same"):
        gdmix.fit(cfg, frame, val, features={"g": X})
    model = gdmix.fit(cfg, frame)
    with pytest.raises(DataError, match="trained without one"):
        model.score(frame, features={"g": X})


def test_matrix_models_are_refused_where_they_cannot_work(tmp_path) -> None:
    """Serving reads features from requests, and a GBDT from the table: both refuse a
    matrix with one line instead of scoring without it."""
    from gdmix.errors import ModelDirectoryError
    from gdmix.serving.loader import load_serving_model

    frame, X = _data()
    model = gdmix.fit(_config(False, n_passes=1), frame, features={"g": X, "u": X})
    model.save(tmp_path / "m")
    with pytest.raises(ModelDirectoryError, match="trained on a feature matrix given beside"):
        load_serving_model(tmp_path / "m")
    pytest.importorskip("lightgbm")
    gbdt = parse_config(
        {"coordinates": [{"name": "b", "type": "gbdt", "features": {"numeric": ["x1"]}}]}
    )
    with pytest.raises(ConfigError, match="feature matrices feed fixed and random coordinates"):
        gdmix.fit(gbdt, frame, features={"b": X})

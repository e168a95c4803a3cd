"""Coefficient tables of random effects: dense in-memory arrays <-> Parquet rows.

One row per entity with a model: ``entity_id``, ``n_rows``, ``intercept`` and the
sparse lists ``indices`` (positions in ``features.json``) and ``values``; with
variances, also ``intercept_variance`` and ``variances`` (aligned with ``indices``). A
feature absent from an entity's lists has coefficient 0 and the default variance
(``1 / l2``). Lists are built from offsets with pyarrow, never one Python object per
entity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

__all__ = [
    "DENSE_MAX_FEATURES",
    "RandomEffectArrays",
    "coefficient_table",
    "read_coefficients",
    "write_coefficients",
]

#: Shards with more features keep coefficients as sparse (CSR) rows per entity: a dense
#: (entities x features) array of a wide shard would be mostly zeros (100,000 entities x
#: 10,000 features is 8 GB), and touching it costs more than solving.
DENSE_MAX_FEATURES = 256


@dataclass
class RandomEffectArrays:
    """Dense per-entity parameters (rows = entities)."""

    entity_ids: pd.Index
    n_rows: np.ndarray
    intercept: np.ndarray
    coef: np.ndarray | sp.csr_matrix
    intercept_variance: np.ndarray | None = None
    variance: np.ndarray | sp.csr_matrix | None = None
    #: Refreshes since the entity last had rows (0: in the latest data).
    age: np.ndarray | None = None


def _entity_array(ids: pd.Index) -> pa.Array:
    return pa.array(ids.to_numpy(), from_pandas=True)


def coefficient_table(
    arrays: RandomEffectArrays, *, default_variance: float | None = None
) -> pa.Table:
    """The entities' parameters as an Arrow table (the Parquet file's content)."""
    coef = arrays.coef
    if sp.issparse(coef):  # stored entries (explicit zeros too) are what is written
        coef = coef.tocsr()
        rows = np.repeat(np.arange(coef.shape[0]), np.diff(coef.indptr))
        cols, values = coef.indices, coef.data
        variances = None
        if arrays.variance is not None:  # looked up, not assumed to share coef's pattern
            variances = np.asarray(arrays.variance.tocsr()[rows, cols]).ravel()
            variances[variances == 0] = default_variance
    else:
        keep = coef != 0
        if arrays.variance is not None:
            keep |= arrays.variance != default_variance
        rows, cols = np.nonzero(keep)
        values = coef[rows, cols]
        variances = arrays.variance[rows, cols] if arrays.variance is not None else None
    offsets = np.zeros(coef.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=coef.shape[0]), out=offsets[1:])
    columns = {
        "entity_id": _entity_array(arrays.entity_ids),
        "n_rows": pa.array(arrays.n_rows, type=pa.int64()),
        "intercept": pa.array(arrays.intercept, type=pa.float64()),
        "indices": pa.ListArray.from_arrays(offsets, pa.array(cols.astype(np.int32))),
        "values": pa.ListArray.from_arrays(offsets, pa.array(values, type=pa.float64())),
    }
    if arrays.age is not None and np.any(arrays.age):
        columns["age"] = pa.array(arrays.age, type=pa.int32())
    if variances is not None and arrays.intercept_variance is not None:
        columns["intercept_variance"] = pa.array(arrays.intercept_variance, type=pa.float64())
        columns["variances"] = pa.ListArray.from_arrays(
            offsets, pa.array(variances, type=pa.float64())
        )
    return pa.table(columns)


def write_coefficients(
    arrays: RandomEffectArrays, path: Path, *, default_variance: float | None = None
) -> None:
    """Write the entities' parameters to ``path`` (Parquet)."""
    pq.write_table(coefficient_table(arrays, default_variance=default_variance), path)


def read_coefficients(
    path: Path, n_features: int, *, default_variance: float | None = None
) -> RandomEffectArrays:
    """Read a table written by :func:`write_coefficients` into dense arrays.

    Raises
    ------
    ValueError
        When indices fall outside ``n_features``.
    """
    table = pq.read_table(path)
    n = table.num_rows
    idx = table.column("indices").combine_chunks()
    flat = idx.flatten().to_numpy().astype(np.int64)
    if len(flat) and (flat.min() < 0 or flat.max() >= n_features):
        raise ValueError("coefficient indices out of range of features.json")
    offsets = idx.offsets.to_numpy().astype(np.int64)
    owner = np.repeat(np.arange(n), np.diff(offsets))
    values = table.column("values").combine_chunks().flatten().to_numpy()
    intercept = table.column("intercept").to_numpy().astype(np.float64)
    if not (np.isfinite(values).all() and np.isfinite(intercept).all()):
        raise ValueError("coefficients hold NaN or infinite values")
    sparse = n_features > DENSE_MAX_FEATURES
    if sparse:
        coef = sp.csr_matrix((values, flat, offsets), shape=(n, n_features))
        coef.sort_indices()
    else:
        coef = np.zeros((n, n_features))
        coef[owner, flat] = values
    out = RandomEffectArrays(
        entity_ids=pd.Index(table.column("entity_id").to_pandas()),
        n_rows=table.column("n_rows").to_numpy().astype(np.int64),
        intercept=intercept,
        coef=coef,
    )
    if "age" in table.column_names:
        out.age = table.column("age").to_numpy().astype(np.int64)
    if "variances" in table.column_names:
        if default_variance is None:
            raise ValueError("a table with variances needs the default variance")
        stored = table.column("variances").combine_chunks().flatten().to_numpy()
        if not (stored > 0).all():  # NaN fails too; +inf is an unpenalised feature's
            raise ValueError("variances must be positive numbers")
        if sparse:
            var = sp.csr_matrix((stored, flat, offsets), shape=(n, n_features))
            var.sort_indices()
        else:
            var = np.full((n, n_features), default_variance)
            var[owner, flat] = stored
        out.variance = var
        out.intercept_variance = table.column("intercept_variance").to_numpy().astype(np.float64)
    return out

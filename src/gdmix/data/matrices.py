"""Feature matrices passed beside a table: one per coordinate, rows aligned with the table.

``gdmix.fit(config, frame, features={"global": X}, feature_names={"global": names})``
gives the coordinate ``global`` the columns of ``X`` (a scipy sparse matrix, a 2-D numpy
array or a pandas DataFrame of numbers) after those its config names in the table. The
table keeps the label, weight, offset, uid and entity columns. A matrix stays sparse all
the way to the solvers: it becomes one canonical CSR matrix of float64 values (no copy
when it already is one) and is never densified.

The model records the column names (``features.json``), so that scoring with a matrix of
the same columns works whatever their order, and a matrix with other columns is refused
with the names that differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gdmix.errors import ConfigError, DataError

__all__ = ["FeatureMatrix", "MatrixInput", "align_matrix", "feature_matrices", "stack_matrices"]

#: What ``features=`` maps each coordinate name to.
MatrixInput = Any  # scipy.sparse matrix or array, 2-D ndarray, or DataFrame of numbers

_EXPECTED = (
    "a scipy sparse matrix, a 2-D numpy array or a pandas DataFrame of numbers, one row "
    "per row of the table"
)


@dataclass(frozen=True)
class FeatureMatrix:
    """One coordinate's feature matrix, ready for the solvers.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix
        Float64 values, sorted column indices, no duplicate entries.
    names : list of str or None
        One name per column; ``None`` when none were given (the columns are then
        ``matrix[0], matrix[1], ...`` in training, and taken by position when scoring).
    """

    matrix: sp.csr_matrix
    names: list[str] | None

    @property
    def n_rows(self) -> int:
        """Rows of the matrix."""
        return int(self.matrix.shape[0])

    def column_names(self) -> list[str]:
        """The names of the columns (``matrix[0], matrix[1], ...`` when none were given)."""
        if self.names is not None:
            return list(self.names)
        return [f"matrix[{j}]" for j in range(self.matrix.shape[1])]


def _csr(value: Any, where: str) -> tuple[sp.csr_matrix, list[str] | None]:
    """``value`` as a canonical float64 CSR matrix (a copy only when needed) and, for a
    DataFrame, its column names."""
    names: list[str] | None = None
    if isinstance(value, pd.DataFrame):
        names = [str(c) for c in value.columns]
        if all(isinstance(d, pd.SparseDtype) for d in value.dtypes) and value.shape[1]:
            value = value.sparse.to_coo()  # no dense copy
        else:
            bad = [c for c in value.columns if not pd.api.types.is_numeric_dtype(value[c])]
            if bad:
                raise DataError(f"{where}: column(s) {[str(c) for c in bad[:5]]} are not numeric")
            value = value.to_numpy(dtype=np.float64, na_value=np.nan)
    if sp.issparse(value):
        if value.ndim != 2:
            raise TypeError(f"{where} must be 2-D. Got shape {value.shape} instead")
        mat = value if isinstance(value, sp.csr_matrix) else sp.csr_matrix(value)
        real = np.issubdtype(mat.dtype, np.number) or mat.dtype == np.bool_
        if not real or np.issubdtype(mat.dtype, np.complexfloating):
            raise DataError(f"{where}: values must be real numbers. Got dtype {mat.dtype} instead")
        if mat.dtype != np.float64:
            mat = mat.astype(np.float64)  # a new matrix: the caller's is untouched
        if not mat.has_canonical_format:  # on a copy: the caller's arrays stay as they are
            mat = mat.copy()
            mat.sum_duplicates()  # sorts the indices too
    elif isinstance(value, np.ndarray):
        if value.ndim != 2:
            raise TypeError(f"{where} must be 2-D. Got an array of shape {value.shape} instead")
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise DataError(f"{where}: values must be numbers. Got dtype {value.dtype} instead")
        if np.issubdtype(value.dtype, np.complexfloating):
            raise DataError(
                f"{where}: values must be real numbers. Got dtype {value.dtype} instead"
            )
        dense = np.asarray(value, dtype=np.float64)
        bad = ~np.isfinite(dense)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(
                f"{where} holds {dense[row, col]} at row {row}, column {col}; values must be finite"
            )
        mat = sp.csr_matrix(dense)
        mat.sort_indices()
    else:
        raise TypeError(f"{where} must be {_EXPECTED}. Got {type(value).__name__} instead")
    data = mat.data
    if data.size and not np.isfinite(data).all():
        i = int(np.flatnonzero(~np.isfinite(data))[0])
        row = int(np.searchsorted(mat.indptr, i, side="right") - 1)
        raise DataError(
            f"{where} holds {data[i]} at row {row}, column {int(mat.indices[i])}; values must "
            "be finite"
        )
    return mat, names


def _names(given: Any, own: list[str] | None, n_columns: int, where: str) -> list[str] | None:
    if given is None:
        if own is None:
            return None
        names = own
    else:
        if isinstance(given, str) or not isinstance(given, Sequence | np.ndarray | pd.Index):
            raise TypeError(
                f"feature names of {where} must be a list of strings. Got "
                f"{type(given).__name__} instead"
            )
        names = [str(v) for v in given]
        if own is not None and names != own:
            raise DataError(f"{where}: feature_names differ from the DataFrame's column names")
    if len(names) != n_columns:
        raise DataError(
            f"{where} has {n_columns} columns but {len(names)} feature names; give one name "
            "per column"
        )
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})[:5]
        raise DataError(f"{where}: feature names must be unique. Got {dupes} more than once")
    return names


def feature_matrices(
    features: Mapping[str, MatrixInput] | None,
    feature_names: Mapping[str, Sequence[str]] | None,
    n_rows: int,
    where: str,
    *,
    coordinates: Sequence[str] | None = None,
    argument: str = "features",
) -> dict[str, FeatureMatrix]:
    """Check and convert ``features=`` (and ``feature_names=``) of one table.

    Parameters
    ----------
    features : dict of str to matrix, or None
        Coordinate name to its matrix (see :data:`MatrixInput`); a list of matrices is
        stacked (rows of several tables, in order).
    feature_names : dict of str to list of str, or None
        Coordinate name to its column names (default: a DataFrame's columns, else none:
        see :class:`FeatureMatrix`).
    n_rows : int
        Rows of the table: every matrix must have as many.
    where : str
        Name of the table in messages.
    coordinates : list of str, optional
        The model's coordinate names: any other key is refused.
    argument : str
        Name of the argument in messages.

    Returns
    -------
    dict of str to FeatureMatrix

    Raises
    ------
    TypeError
        When ``features`` is not a dict of matrices.
    ConfigError
        When a key names no coordinate.
    DataError
        On a row count that differs from the table's, non-finite values, bad names.
    """
    if features is None:
        if feature_names:
            raise TypeError(f"feature_names was given without {argument}")
        return {}
    if not isinstance(features, Mapping):
        raise TypeError(
            f"{argument} must be a dict mapping coordinate names to matrices, e.g. "
            f"{{'global': X}}, where X is {_EXPECTED}. Got {type(features).__name__} instead"
        )
    if not isinstance(feature_names, Mapping | None):
        raise TypeError(
            "feature_names must be a dict mapping coordinate names to lists of column names. "
            f"Got {type(feature_names).__name__} instead"
        )
    names_of = dict(feature_names or {})
    unknown = sorted(set(features) - set(coordinates)) if coordinates is not None else []
    unknown += sorted(set(names_of) - set(features))
    if unknown:
        known = list(coordinates) if coordinates is not None else sorted(features)
        raise ConfigError(
            f"{argument} / feature_names name(s) {unknown} that are not coordinates with a "
            f"matrix (the coordinates are {known})"
        )
    out: dict[str, FeatureMatrix] = {}
    for name, value in features.items():
        label = f"{argument}['{name}'] ({where})"
        if isinstance(value, list | tuple):
            value = stack_matrices(value, label)
        mat, own = _csr(value, label)
        if mat.shape[0] != n_rows:
            raise DataError(
                f"{label} has {mat.shape[0]} rows but the table has {n_rows}; the matrix must "
                "hold one row per row of the table, in the same order"
            )
        out[name] = FeatureMatrix(mat, _names(names_of.get(name), own, mat.shape[1], label))
    return out


def stack_matrices(parts: Sequence[MatrixInput], where: str) -> sp.csr_matrix:
    """The rows of several matrices (of the same columns) one after the other, as CSR."""
    if not parts:
        raise DataError(f"{where}: an empty list of matrices")
    mats = [_csr(p, f"{where}[{i}]")[0] for i, p in enumerate(parts)]
    widths = {m.shape[1] for m in mats}
    if len(widths) > 1:
        raise DataError(f"{where}: the matrices have different numbers of columns {sorted(widths)}")
    return sp.vstack(mats, format="csr")


def align_matrix(given: FeatureMatrix | None, names: list[str], where: str) -> sp.csr_matrix:
    """``given`` with its columns in the order ``names`` (the model's), or raise.

    Raises
    ------
    DataError
        When no matrix is given, or its columns are not the model's.
    """
    if given is None:
        raise DataError(
            f"{where}: the model was trained on a feature matrix of {len(names)} columns; "
            "pass it with features={'<coordinate>': matrix}"
        )
    if given.names is None:  # by position
        if given.matrix.shape[1] != len(names):
            raise DataError(
                f"{where}: the feature matrix has {given.matrix.shape[1]} columns but the "
                f"model {len(names)}; use the same columns as in training"
            )
        return given.matrix
    if given.names == names:
        return given.matrix
    mine, theirs = set(names), set(given.names)
    if mine == theirs and len(given.names) == len(names):
        position = {n: j for j, n in enumerate(given.names)}
        mat = given.matrix[:, [position[n] for n in names]]
        mat = sp.csr_matrix(mat)
        mat.sort_indices()
        return mat
    missing = [n for n in names if n not in theirs][:5]
    extra = [n for n in given.names if n not in mine][:5]
    raise DataError(
        f"{where}: the feature matrix's columns differ from the model's ({len(given.names)} "
        f"given, {len(names)} in the model; missing {missing}, not in the model {extra}); "
        "use the same columns (the same vectorizer) as in training"
    )

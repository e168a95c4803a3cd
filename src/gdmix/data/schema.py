"""Checks of a table against the column roles a config gives it.

Every check raises :class:`gdmix.errors.DataError` with a message that names the
column, the rule and what was found, before any work starts. Numeric columns are read
without copies where their memory allows (a float64 column is checked in place).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import pandas as pd
from numba import prange

from gdmix.errors import DataError
from gdmix.jit_variants import serial_and_parallel

__all__ = [
    "check_entity_column",
    "check_finite_numeric",
    "check_label",
    "check_not_empty",
    "check_numeric_dtype",
    "first_non_finite",
    "known_finite",
    "mark_finite",
    "recording_finite",
    "require_columns",
    "shared_finite_checks",
]

#: Within :func:`shared_finite_checks`: (id of the table, column, dtype) -> the table,
#: for the columns already found finite (the table is held so that its id stays its own).
_FINITE: ContextVar[dict[tuple[int, str, str], pd.DataFrame] | None] = ContextVar(
    "gdmix_finite_columns", default=None
)


@contextmanager
def shared_finite_checks() -> Iterator[None]:
    """Within this block, a table's column found finite (as a given dtype) is not checked
    again (:func:`known_finite`, :func:`mark_finite`).

    For one training call, where several coordinates read the same numeric columns of
    tables that nothing changes meanwhile: on 20M rows x 10 columns each check is a pass
    over 1.6 GB. Outside such a block every read is checked.
    """
    token = _FINITE.set({})
    try:
        yield
    finally:
        _FINITE.reset(token)


def recording_finite() -> bool:
    """Whether a :func:`shared_finite_checks` block is open (what :func:`mark_finite`
    records is then used)."""
    return _FINITE.get() is not None


def known_finite(frame: pd.DataFrame, columns: list[str], dtype: Any) -> bool:
    """Whether every one of ``columns`` of ``frame`` was found finite as ``dtype`` within
    the current :func:`shared_finite_checks` block (False outside one)."""
    seen = _FINITE.get()
    if seen is None or not columns:
        return False
    key = np.dtype(dtype).str
    return all(seen.get((id(frame), c, key)) is frame for c in columns)


def mark_finite(frame: pd.DataFrame, columns: list[str], dtype: Any) -> None:
    """Record that ``columns`` of ``frame`` are finite as ``dtype`` (within a
    :func:`shared_finite_checks` block; nothing outside one)."""
    seen = _FINITE.get()
    if seen is not None:
        key = np.dtype(dtype).str
        seen.update({(id(frame), c, key): frame for c in columns})


def _first_rows_py(values, first):  # type: ignore[no-untyped-def]
    for j in prange(values.shape[1]):
        first[j] = -1
        for i in range(values.shape[0]):
            if not np.isfinite(values[i, j]):
                first[j] = i
                break


_first_rows_ser, _first_rows_par = serial_and_parallel(_first_rows_py)


def first_non_finite(values: np.ndarray) -> tuple[int, int]:
    """``(row, column)`` of the first NaN/inf of a 2-D float array (column by column),
    ``(-1, -1)`` when every value is finite. Compiled (columns on all threads); no
    temporary arrays."""
    if values.size == 0:
        return -1, -1
    first = np.empty(values.shape[1], dtype=np.int64)
    kernel = (
        _first_rows_par if values.size >= 1_000_000 and values.shape[1] > 1 else _first_rows_ser
    )
    kernel(values, first)
    bad = np.flatnonzero(first >= 0)
    return (int(first[bad[0]]), int(bad[0])) if len(bad) else (-1, -1)


def check_numeric_dtype(frame: pd.DataFrame, column: str, where: str) -> None:
    """Raise when ``column`` is neither numeric nor boolean."""
    series = frame[column]
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise DataError(
            f"{where}: column '{column}' must be numeric. Got dtype {series.dtype} instead"
        )


def require_columns(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    """Raise when any of ``columns`` is missing from ``frame``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = list(frame.columns)
        shown = have[:20] + (["..."] if len(have) > 20 else [])
        raise DataError(f"{where}: missing column(s) {missing}; the data has {shown}")


def check_not_empty(frame: pd.DataFrame, where: str) -> None:
    """Raise when the table has no rows."""
    if len(frame) == 0:
        raise DataError(f"{where}: the table is empty (0 rows)")


def check_finite_numeric(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """Return ``column`` as finite float64, or raise naming the problem.

    A float64 column comes back without a copy (read-only when the frame's memory is).
    """
    check_numeric_dtype(frame, column, where)
    series = frame[column]
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "iub":
        # numpy integers and booleans hold no missing values and are finite: a plain
        # cast, 10x faster than pandas' conversion with an na_value, and no check
        return series.to_numpy().astype(np.float64)
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if first_non_finite(values.reshape(-1, 1))[0] >= 0:
        bad = ~np.isfinite(values)
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: column '{column}' has {int(bad.sum())} NaN/inf value(s) "
            f"(first at row {i}: {values[i]})"
        )
    return values


def _binary_as_float_py(src, out, copy):  # type: ignore[no-untyped-def]
    bad = 0
    for i in prange(src.shape[0]):
        v = src[i]
        bad += (v != 0) & (v != 1)  # NaN too
        if copy:
            out[i] = v
    return bad


_binary_ser, _binary_par = serial_and_parallel(_binary_as_float_py)

#: Label columns of at least this many rows are checked (and cast) on all threads.
_PARALLEL_LABEL_ROWS = 1_000_000


def _binary_labels(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    """A 0/1 label column as float64 in one compiled pass (cast and checked on all
    threads; a float64 column without a copy), or None when it is not one of numpy's
    numeric dtypes or holds anything but 0 and 1 (the caller then explains)."""
    series = frame[column]
    dtype = series.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iubf":
        return None
    src = series.to_numpy()
    copy = dtype != np.float64
    out = np.empty(len(src) if copy else 0)
    src_arg = src.view(np.uint8) if dtype.kind == "b" else src
    kernel = _binary_par if len(src) >= _PARALLEL_LABEL_ROWS else _binary_ser
    if kernel(src_arg, out, copy) > 0:
        return None
    return out if copy else src


def check_label(frame: pd.DataFrame, column: str, where: str, task: str = "logistic") -> np.ndarray:
    """Return the label column as float64, or raise when it does not fit ``task``: 0/1
    (logistic), any finite number (linear), a count >= 0 (Poisson)."""
    if task == "logistic":
        check_numeric_dtype(frame, column, where)
        values = _binary_labels(frame, column)
        if values is not None:
            return values
    values = check_finite_numeric(frame, column, where)
    if task == "linear":
        return values
    if task == "poisson":
        bad = values < 0
        rule = "Poisson labels, counts >= 0"
    else:
        bad = (values != 0) & (values != 1)
        rule = "0/1 values"
    if bad.any():
        found = np.unique(values[bad])[:5].tolist()
        raise DataError(f"{where}: label column '{column}' must hold {rule}. Got {found} instead")
    return values


def check_entity_column(frame: pd.DataFrame, column: str, where: str) -> pd.Series:
    """Return the entity-id column, raising when it is missing or has nulls."""
    require_columns(frame, [column], where)
    series = frame[column]
    nulls = series.isna()
    if nulls.any():
        i = int(np.flatnonzero(nulls.to_numpy())[0])
        raise DataError(
            f"{where}: entity column '{column}' has {int(nulls.sum())} null id(s) "
            f"(first at row {i})"
        )
    return series

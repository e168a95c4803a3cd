"""The kind of every feature column, recorded at training and checked on other tables.

A categorical column trained on numbers and scored on strings (or on booleans) shares no
level with the model: every row would silently fall back to "unseen". The kinds of the
training table's feature columns are saved with the model, and validation, test and
scoring tables must match them.
"""

from __future__ import annotations

import pandas as pd

from gdmix.errors import DataError

__all__ = ["check_column_kinds", "column_kind", "column_kinds"]

_NUMERIC_ALIKE = {"number", "bool"}


def _all_null(series: pd.Series) -> bool:
    """Whether a non-empty column holds nulls only (a glance at its head usually says
    no, without a pass over every row)."""
    if len(series) == 0 or series.iloc[:1024].notna().any():
        return False
    return bool(series.isna().all())


def column_kind(series: pd.Series) -> str:
    """``number``, ``bool``, ``string``, ``nested`` (lists, structs) or ``mixed``.

    A column of nulls only is ``mixed`` whatever its dtype (a CSV column of empty texts
    reads as floats): it matches any kind.
    """
    dtype = series.dtype
    if not isinstance(dtype, pd.ArrowDtype) and _all_null(series):
        return "mixed"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if isinstance(dtype, pd.CategoricalDtype):
        return column_kind(pd.Series(dtype.categories))
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return "string"
    if isinstance(dtype, pd.ArrowDtype):
        import pyarrow as pa

        t = dtype.pyarrow_dtype
        if pa.types.is_nested(t):
            return "nested"
        return "string" if pa.types.is_string(t) or pa.types.is_large_string(t) else "mixed"
    values = series.dropna()
    if values.empty:
        return "mixed"
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    return {
        "string": "string",
        "integer": "number",
        "floating": "number",
        "mixed-integer-float": "number",
        "decimal": "number",
        "boolean": "bool",
    }.get(inferred, "nested" if hasattr(values.iloc[0], "__len__") else "mixed")


def column_kinds(frame: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """Kinds of the ``columns`` of ``frame`` that it holds."""
    return {c: column_kind(frame[c]) for c in columns if c in frame.columns}


def check_column_kinds(
    expected: dict[str, str], frame: pd.DataFrame, where: str, *, numeric: set[str] | None = None
) -> None:
    """Raise when a column's kind differs from training's.

    Columns in ``numeric`` (used as numbers) accept booleans for numbers and back; a
    column of only nulls ("mixed") matches anything.

    Raises
    ------
    DataError
        Naming the column, the training kind and the kind found.
    """
    for col, kind in expected.items():
        if col not in frame.columns:
            continue
        found = column_kind(frame[col])
        if found == kind or "mixed" in (found, kind):
            continue
        if numeric and col in numeric and {found, kind} <= _NUMERIC_ALIKE:
            continue
        raise DataError(
            f"{where}: column '{col}' holds {found} values but the model was trained on "
            f"{kind} values; convert the column to {kind} values"
        )

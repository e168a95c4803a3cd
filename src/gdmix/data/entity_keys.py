"""Entity ids as one canonical key type per random-effect coordinate.

The same entity must get the same key whichever way a table stores its id: ``42``,
``42.0`` (an integer column with nulls, or a CSV read back) and ``"42"`` (a string
column) are one entity. A coordinate's key kind is fixed at training and saved with the
model (the type of its ``entity_id`` column):

- ``int``: the training ids are integers, or floats that hold integers. Other tables'
  ids map to int64: integers as they are, whole floats, and strings written as plain
  decimal integers (``"42"``, not ``"042"`` or ``"4.2e1"``); anything else matches no
  entity.
- ``str``: the training ids are strings (or a mix of strings and numbers). Numbers map
  to their decimal text (``42`` and ``42.0`` to ``"42"``).

Integer keys whose values span a range not much wider than their number (ids counted
from 0 or from an offset, the usual case) are looked up through a direct table in
compiled code instead of a hash table: :func:`distinct_sorted` and :func:`key_codes`.
"""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np
import pandas as pd
from numba import prange

from gdmix.errors import DataError
from gdmix.jit_variants import serial_and_parallel

__all__ = [
    "KeyKind",
    "canonical_keys",
    "distinct_sorted",
    "int_like",
    "key_codes",
    "key_kind",
    "kind_of_index",
]

#: Key lookups of at least this many keys run on every thread.
_PARALLEL_MIN_KEYS = 1_000_000

KeyKind = Literal["int", "str"]
_INT_TEXT = r"-?(?:0|[1-9][0-9]*)"
_INT64_MAX = 2**63 - 1


def _as_series(values: pd.Series | pd.Index | np.ndarray) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    return pd.Series(np.asarray(values) if not isinstance(values, pd.Index) else values)


def int_like(values: pd.Series | pd.Index | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer value of every id that holds one: ``(ints, ok)``, int64 and bool arrays.

    Integers, whole finite floats and plain decimal integer strings are integer-like.
    """
    s = _as_series(values)
    n = len(s)
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.int64), np.ones(n, dtype=bool)
    if pd.api.types.is_integer_dtype(s.dtype):
        if pd.api.types.is_unsigned_integer_dtype(s.dtype) and n and s.max() > _INT64_MAX:
            ok = s.to_numpy() <= _INT64_MAX
            return np.where(ok, s.to_numpy(), 0).astype(np.int64), ok
        return s.to_numpy(dtype=np.int64), np.ones(n, dtype=bool)
    if pd.api.types.is_float_dtype(s.dtype):
        f = s.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(f) & (f == np.round(f)) & (np.abs(f) < 2.0**63)
        return np.where(ok, f, 0).astype(np.int64), ok
    # strings, categoricals, objects mixing types
    obj = s.astype(object).to_numpy()
    ints = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    is_str = np.fromiter((isinstance(v, str) for v in obj), dtype=bool, count=n)
    if is_str.any():
        text = pd.Series(obj[is_str], dtype=object).astype(str)
        match = text.str.fullmatch(_INT_TEXT).to_numpy(dtype=bool)
        idx = np.flatnonzero(is_str)[match]
        parsed = pd.to_numeric(text[match], errors="coerce")
        fits = parsed.notna().to_numpy() & (parsed.abs() <= _INT64_MAX).to_numpy()
        ints[idx[fits]] = parsed[fits].to_numpy(dtype=np.int64)
        ok[idx[fits]] = True
    other = np.flatnonzero(~is_str)
    if len(other):
        sub_ints, sub_ok = int_like(pd.Series(list(obj[other])).infer_objects())
        ints[other], ok[other] = sub_ints, sub_ok
    return ints, ok


def key_kind(values: pd.Series | pd.Index | np.ndarray, where: str) -> KeyKind:
    """The key kind of a training table's entity ids.

    Raises
    ------
    DataError
        When the ids are numbers that are not integers (``1.5``) or not finite.
    """
    s = _as_series(values)
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_integer_dtype(s.dtype):
        return "int"
    if pd.api.types.is_float_dtype(s.dtype):
        _, ok = int_like(s)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise DataError(
                f"{where}: entity ids must be integers or strings. Got the number {s.iloc[i]!r} "
                f"at row {i}"
            )
        return "int"
    obj = s.astype(object).to_numpy()
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in obj):
        return "int"
    return "str"


def kind_of_index(ids: pd.Index) -> KeyKind:
    """The key kind of a saved entity index (its dtype)."""
    return "int" if pd.api.types.is_integer_dtype(ids.dtype) else "str"


def canonical_keys(
    values: pd.Series | pd.Index | np.ndarray, kind: KeyKind
) -> tuple[np.ndarray, np.ndarray]:
    """Ids as keys of ``kind``: ``(keys, ok)``.

    ``keys`` is int64 (kind ``int``) or an object array of ``str`` (kind ``str``); ``ok``
    is False where an id has no key of that kind (a string that is not an integer, for
    kind ``int``): such rows match no entity.
    """
    s = _as_series(values)
    if kind == "int":
        return int_like(s)
    n = len(s)
    if pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
        return s.astype(str).to_numpy(dtype=object), np.ones(n, dtype=bool)
    ints, is_int = int_like(s)
    keys = np.empty(n, dtype=object)
    if is_int.any():
        keys[is_int] = ints[is_int].astype(str).astype(object)
    rest = np.flatnonzero(~is_int)
    if len(rest):
        keys[rest] = s.iloc[rest].astype(str).to_numpy(dtype=object)
    return keys, np.ones(n, dtype=bool)


#: Integer keys use a direct table when their range is at most this many times the
#: number of values (plus a fixed allowance), else a hash table.
_TABLE_SPAN_FACTOR = 4
_TABLE_SPAN_MIN = 1 << 20


@numba.njit(cache=True)
def _min_max(values):  # type: ignore[no-untyped-def]
    lo = values[0]
    hi = values[0]
    for v in values:
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@numba.njit(cache=True)
def _mark(values, lo, span):  # type: ignore[no-untyped-def]
    seen = np.zeros(span, dtype=np.bool_)
    for v in values:
        seen[v - lo] = True
    return seen


def _table_codes_py(index, keys, lo, hi):  # type: ignore[no-untyped-def]
    table = np.full(hi - lo + 1, -1, dtype=np.int64)
    for e in range(index.shape[0]):
        table[index[e] - lo] = e
    n = keys.shape[0]
    out = np.empty(n, dtype=np.int64)
    for i in prange(n):
        k = keys[i]
        out[i] = table[k - lo] if lo <= k <= hi else -1
    return out


_table_codes_ser, _table_codes_par = serial_and_parallel(_table_codes_py)


def _table_codes(index: np.ndarray, keys: np.ndarray, lo: np.int64, hi: np.int64) -> np.ndarray:
    kernel = _table_codes_par if len(keys) >= _PARALLEL_MIN_KEYS else _table_codes_ser
    return kernel(index, keys, lo, hi)


def _table_span(values: np.ndarray, allowance: int) -> tuple[int, int] | None:
    """``(lo, hi)`` of int64 ``values`` when a direct table over that range is cheap."""
    if values.dtype != np.int64 or len(values) == 0:
        return None
    lo, hi = (int(v) for v in _min_max(values))
    if hi - lo + 1 > _TABLE_SPAN_FACTOR * allowance + _TABLE_SPAN_MIN:
        return None
    return lo, hi


def distinct_sorted(keys: np.ndarray) -> pd.Index:
    """The distinct values of canonical keys, sorted, as an index.

    Parameters
    ----------
    keys : ndarray
        int64 keys, or an object array of ``str`` (from :func:`canonical_keys`).

    Returns
    -------
    pandas.Index
    """
    span = _table_span(keys, len(keys))
    if span is None:
        return pd.Index(pd.unique(keys)).sort_values()
    lo, hi = span
    seen = _mark(keys, np.int64(lo), hi - lo + 1)
    return pd.Index(np.flatnonzero(seen).astype(np.int64) + np.int64(lo))


def key_codes(index: pd.Index, keys: np.ndarray) -> np.ndarray:
    """Position of every key in ``index`` (distinct values), -1 when absent.

    The same as ``index.get_indexer(keys)``, through a direct table when the index
    holds integers of a compact range.

    Returns
    -------
    ndarray of int64
    """
    if index.dtype == np.int64 and keys.dtype == np.int64 and len(keys) and index.is_unique:
        values = index.to_numpy()
        span = _table_span(values, len(values))
        if span is not None:
            lo, hi = span
            return _table_codes(values, keys, np.int64(lo), np.int64(hi))
    return np.asarray(index.get_indexer(keys), dtype=np.int64)

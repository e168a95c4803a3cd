"""Lookup tables of the scoring service: entity id -> row, level -> column, coefficients.

An :class:`EntityTable` is an open-addressing hash table (linear probing, load factor at
most 1/2) built in compiled code over a random effect's entity ids. It stores only row
numbers (int32); the ids themselves stay where they are, typically in the memory-mapped
``coefficients.arrow`` of the model folder, so a table of 10^7 entities costs 128 MiB of
slots and builds in well under a second. Integer ids are probed by value; string ids by a
64-bit FNV-1a hash of their UTF-8 bytes, then compared byte for byte.

:class:`RandomTable` holds everything a random effect scores with: the entity table, the
intercepts and the coefficients (a dense block, or CSR rows for wide shards), read from
the Arrow copy when the folder has one and from the Parquet table otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from gdmix.effects.random_table import open_arrow_copy

__all__ = ["EntityTable", "RandomTable", "canonical_id", "level_string", "load_random_table"]

_INT_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@numba.njit(cache=True, nogil=True)
def _mix(x):  # type: ignore[no-untyped-def]
    """splitmix64 finaliser: spreads the bits of a uint64 over the whole word."""
    x = x ^ (x >> _S30)
    x = x * _M1
    x = x ^ (x >> _S27)
    x = x * _M2
    return x ^ (x >> _S31)


@numba.njit(cache=True, nogil=True)
def _fnv(data, lo, hi):  # type: ignore[no-untyped-def]
    h = _FNV_OFFSET
    for q in range(lo, hi):
        h = (h ^ np.uint64(data[q])) * _FNV_PRIME
    return _mix(h)


@numba.njit(cache=True, nogil=True)
def _build_int(ids, mask):  # type: ignore[no-untyped-def]
    slots = np.full(mask + 1, -1, dtype=np.int32)
    for r in range(ids.shape[0]):
        k = ids[r]
        h = _mix(np.uint64(k)) & mask
        while True:
            s = slots[h]
            if s < 0:
                slots[h] = r
                break
            if ids[s] == k:
                return slots, r
            h = (h + np.uint64(1)) & mask
    return slots, -1


@numba.njit(cache=True, nogil=True)
def _find_int(slots, mask, ids, keys, ok, out):  # type: ignore[no-untyped-def]
    for i in range(keys.shape[0]):
        out[i] = -1
        if not ok[i]:
            continue
        k = keys[i]
        h = _mix(np.uint64(k)) & mask
        while True:
            s = slots[h]
            if s < 0:
                break
            if ids[s] == k:
                out[i] = s
                break
            h = (h + np.uint64(1)) & mask


@numba.njit(cache=True, nogil=True)
def _same_bytes(a, alo, ahi, b, blo, bhi):  # type: ignore[no-untyped-def]
    if ahi - alo != bhi - blo:
        return False
    for q in range(ahi - alo):
        if a[alo + q] != b[blo + q]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _build_str(offsets, data, mask):  # type: ignore[no-untyped-def]
    n = offsets.shape[0] - 1
    hashes = np.empty(n, dtype=np.uint64)
    slots = np.full(mask + 1, -1, dtype=np.int32)
    for r in range(n):
        lo, hi = offsets[r], offsets[r + 1]
        hk = _fnv(data, lo, hi)
        hashes[r] = hk
        h = hk & mask
        while True:
            s = slots[h]
            if s < 0:
                slots[h] = r
                break
            if hashes[s] == hk and _same_bytes(data, offsets[s], offsets[s + 1], data, lo, hi):
                return slots, hashes, r
            h = (h + np.uint64(1)) & mask
    return slots, hashes, -1


@numba.njit(cache=True, nogil=True)
def _find_str(slots, mask, hashes, offsets, data, qoff, qdata, ok, out):  # type: ignore[no-untyped-def]
    for i in range(qoff.shape[0] - 1):
        out[i] = -1
        if not ok[i]:
            continue
        lo, hi = qoff[i], qoff[i + 1]
        hk = _fnv(qdata, lo, hi)
        h = hk & mask
        while True:
            s = slots[h]
            if s < 0:
                break
            if hashes[s] == hk and _same_bytes(data, offsets[s], offsets[s + 1], qdata, lo, hi):
                out[i] = s
                break
            h = (h + np.uint64(1)) & mask


def _mask(n: int) -> np.uint64:
    size = 16
    while size < 2 * n:
        size *= 2
    return np.uint64(size - 1)


class EntityTable:
    """Row of every entity id of one random effect (-1 for an unseen id).

    Build it with :meth:`from_ids`. ``kind`` is the key kind of the ids (``int`` or
    ``str``, see :mod:`gdmix.data.entity_keys`).

    Raises
    ------
    ValueError
        When an id appears twice.
    """

    def __init__(self, ids: pa.Array) -> None:
        if ids.type == pa.int64():
            self.kind = "int"
            self._ids = ids.to_numpy(zero_copy_only=True)
            self._mask = _mask(len(self._ids))
            self._slots, dup = _build_int(self._ids, self._mask)
        elif ids.type == pa.large_string():
            self.kind = "str"
            bufs = ids.buffers()
            n = len(ids)
            offsets = np.frombuffer(bufs[1], dtype=np.int64, count=n + 1, offset=8 * ids.offset)
            data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else None
            self._offsets = offsets
            self._data = data if data is not None else np.zeros(0, dtype=np.uint8)
            self._mask = _mask(n)
            self._slots, self._hashes, dup = _build_str(self._offsets, self._data, self._mask)
        else:
            raise ValueError(f"entity ids must be int64 or large_string. Got {ids.type}")
        self._arrow = ids
        if dup >= 0:
            raise ValueError(f"entity id {ids[dup].as_py()!r} appears more than once")

    @classmethod
    def from_ids(cls, ids: Any) -> EntityTable:
        """Table over ``ids``: an Arrow array (int64 or large_string, used in place) or
        anything with integer or string values (a pandas Index, a numpy array)."""
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        if isinstance(ids, pa.Array):
            if ids.type == pa.string():
                ids = ids.cast(pa.large_string())
            return cls(ids)
        values = np.asarray(ids)
        if values.dtype.kind in "iu":
            return cls(pa.array(values.astype(np.int64), type=pa.int64()))
        return cls(pa.array([str(v) for v in values.tolist()], type=pa.large_string()))

    def __len__(self) -> int:
        return len(self._arrow)

    def id_at(self, row: int) -> int | str:
        """The id stored at ``row``."""
        return self._arrow[row].as_py()

    def rows(self, keys: list[Any], ok: np.ndarray) -> np.ndarray:
        """Rows of canonical keys (ints for kind ``int``, strings for ``str``); -1 where
        the key is unknown or ``ok`` is False."""
        n = len(keys)
        out = np.empty(n, dtype=np.int64)
        if self.kind == "int":
            arr = np.array([k if good else 0 for k, good in zip(keys, ok, strict=True)],
                           dtype=np.int64)  # fmt: skip
            _find_int(self._slots, self._mask, self._ids, arr, ok, out)
            return out
        encoded = [k.encode("utf-8") if good else b"" for k, good in zip(keys, ok, strict=True)]
        qoff = np.zeros(n + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=qoff[1:])
        qdata = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        _find_str(self._slots, self._mask, self._hashes, self._offsets, self._data, qoff, qdata,
                  ok, out)  # fmt: skip
        return out


def canonical_id(value: Any, kind: str) -> tuple[Any, bool]:
    """The key of one JSON entity id for a random effect of key ``kind``, as batch
    scoring makes it (:func:`gdmix.data.entity_keys.canonical_keys`): ``(key, ok)``.

    Kind ``int``: integers, whole floats and plain decimal strings (``"42"``) give their
    integer; anything else matches no entity (``ok`` False). Kind ``str``: strings as
    they are, integers and whole floats as decimal text (``42.0`` is ``"42"``).
    """
    if isinstance(value, str):
        if kind == "str":
            return value, True
        if _INT_TEXT.fullmatch(value):
            number = int(value)
            return (number, True) if _INT64_MIN <= number <= _INT64_MAX else (0, False)
        return 0, False
    if isinstance(value, float):
        whole = value == value and abs(value) < 2.0**63 and value == round(value)
        if kind == "int":
            return (int(value), True) if whole else (0, False)
        return (str(int(value)) if whole else str(value)), True
    number = int(value)
    if kind == "int":
        return (number, True) if _INT64_MIN <= number <= _INT64_MAX else (0, False)
    return str(number), True


def level_string(value: Any) -> str | None:
    """A categorical level as a string, as :func:`gdmix.data.features._category_strings`
    writes it: whole floats without ``.0`` (3 and 3.0 are one level), None for null."""
    if value is None:
        return None
    if isinstance(value, float) and abs(value) < 2.0**63 and value == round(value):
        return str(int(value))
    return str(value)


@dataclass
class RandomTable:
    """What a random effect scores with.

    Attributes
    ----------
    entities : EntityTable
    intercept : ndarray, shape (n,)
    coef : ndarray of shape (n, d), or None
        Dense coefficients (None for a sparse table).
    indptr, indices, values : ndarray or None
        CSR coefficient rows (sparse tables), column indices sorted within each row.
    n_features : int
    source : str
        ``arrow`` (memory-mapped copy) or ``parquet``.
    """

    entities: EntityTable
    intercept: np.ndarray
    coef: np.ndarray | None
    indptr: np.ndarray | None
    indices: np.ndarray | None
    values: np.ndarray | None
    n_features: int
    source: str

    @property
    def sparse(self) -> bool:
        """Whether the coefficients are CSR rows."""
        return self.coef is None


@numba.njit(cache=True, nogil=True)
def _first_bad(values):  # type: ignore[no-untyped-def]
    """Index of the first non-finite value, or -1 (one pass, no temporaries)."""
    for q in range(values.shape[0]):
        v = values[q]
        if not (v - v == 0.0):
            return q
    return -1


@numba.njit(cache=True, nogil=True)
def _bad_row(indptr, indices, n_features):  # type: ignore[no-untyped-def]
    """First CSR row whose column indices are out of range or not increasing, or -1."""
    for r in range(indptr.shape[0] - 1):
        previous = -1
        for q in range(indptr[r], indptr[r + 1]):
            j = indices[q]
            if j <= previous or j >= n_features:
                return r
            previous = j
    return -1


def _check_finite(values: np.ndarray, what: str) -> None:
    flat = values.reshape(-1)
    if flat.size and _first_bad(flat) >= 0:
        raise ValueError(f"{what} hold NaN or infinite values")


def load_random_table(folder: Path, coordinate_loader: Any, n_features: int) -> RandomTable:
    """The scoring table of the random effect saved in ``folder``.

    Reads the memory-mapped Arrow copy when the folder has a current one; otherwise calls
    ``coordinate_loader()`` (which loads the coordinate from its Parquet table) and takes
    its arrays. Coefficients are checked finite and column indices in range.

    Raises
    ------
    ValueError
        When the tables are malformed (duplicate ids, NaN, indices out of range).
    """
    mapped = open_arrow_copy(folder, n_features)
    if mapped is not None:
        table = RandomTable(
            EntityTable.from_ids(mapped.entity_ids),
            mapped.intercept,
            mapped.coef if mapped.layout != "none" else np.zeros((len(mapped), 0)),
            mapped.indptr,
            mapped.indices,
            mapped.values,
            n_features,
            "arrow",
        )
        if mapped.layout == "sparse":
            table.coef = None
    else:
        coord = coordinate_loader()
        coef = coord.coef
        indptr = indices = values = None
        if sp.issparse(coef):
            csr = sp.csr_matrix(coef)
            csr.sort_indices()
            indptr, indices, values = (csr.indptr.astype(np.int64), csr.indices, csr.data)
            coef = None
        else:
            coef = np.ascontiguousarray(coef, dtype=np.float64)
        table = RandomTable(
            EntityTable.from_ids(coord.entity_ids),
            np.ascontiguousarray(coord.intercept, dtype=np.float64),
            coef, indptr, indices, values, n_features, "parquet",
        )  # fmt: skip
    _check_finite(table.intercept, "intercepts")
    if table.coef is not None:
        if table.coef.shape != (len(table.intercept), n_features):
            raise ValueError(f"coefficient block of shape {table.coef.shape} does not fit")
        _check_finite(table.coef, "coefficients")
    else:
        assert table.indptr is not None and table.indices is not None and table.values is not None
        if len(table.indptr) != len(table.intercept) + 1 or table.indptr[-1] != len(table.values):
            raise ValueError("CSR coefficient rows do not fit the entities")
        _check_finite(table.values, "coefficients")
        if _bad_row(table.indptr, table.indices, n_features) >= 0:
            raise ValueError("coefficient indices out of range of features.json or unsorted")
    if len(table.entities) != len(table.intercept):
        raise ValueError("entity ids and intercepts differ in number")
    return table

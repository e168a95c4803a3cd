"""Hashed categorical features (``features.hashed``): values hashed into a fixed number
of design columns, with no vocabulary to build or save.

The value ``v`` of column ``c`` becomes the UTF-8 string ``"c=v"`` (the level as text,
as categorical columns write it: ``3.0`` is ``3``; nulls give no feature). Its 32-bit
MurmurHash3 (x86 variant, seed 0, read as a signed integer) ``h`` picks column
``|h| mod n_buckets`` of the block, and the feature's value is 1, or with ``signed`` the
sign of ``h`` (+1 for ``h >= 0``). Values landing on one column of a row add up (signed
collisions may cancel to 0, which is then no entry). This is the layout of
scikit-learn's ``FeatureHasher(n_features=n_buckets, input_type="dict",
alternate_sign=signed)`` on ``{c: v}`` rows; the tests check both against it.

The hash is computed in compiled code over the bytes of an Arrow string array, once per
distinct value of a column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

__all__ = ["HashedBlock", "murmurhash3_32"]

_M32 = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593


@numba.njit(cache=True, nogil=True)
def _rotl(x, r):  # type: ignore[no-untyped-def]
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


@numba.njit(cache=True, nogil=True)
def _scramble(k):  # type: ignore[no-untyped-def]
    k = (k * 0xCC9E2D51) & 0xFFFFFFFF
    k = _rotl(k, 15)
    return (k * 0x1B873593) & 0xFFFFFFFF


@numba.njit(cache=True, nogil=True)
def _murmur_kernel(offsets, data, seed, out):  # type: ignore[no-untyped-def]
    """MurmurHash3 x86 32-bit of each string ``data[offsets[i]:offsets[i + 1]]``, as a
    signed 32-bit value in int64 (all arithmetic in int64, masked to 32 bits)."""
    for i in range(out.shape[0]):
        lo = offsets[i]
        n = offsets[i + 1] - lo
        h = np.int64(seed) & 0xFFFFFFFF
        n_blocks = n // 4
        for b in range(n_blocks):
            q = lo + 4 * b
            k = (
                np.int64(data[q])
                | (np.int64(data[q + 1]) << 8)
                | (np.int64(data[q + 2]) << 16)
                | (np.int64(data[q + 3]) << 24)
            )
            h ^= _scramble(k)
            h = _rotl(h, 13)
            h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
        tail = lo + 4 * n_blocks
        rest = n & 3
        if rest > 0:
            k = np.int64(0)
            if rest == 3:
                k ^= np.int64(data[tail + 2]) << 16
            if rest >= 2:
                k ^= np.int64(data[tail + 1]) << 8
            k ^= np.int64(data[tail])
            h ^= _scramble(k)
        h ^= n & 0xFFFFFFFF
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        h ^= h >> 16
        out[i] = h - 4294967296 if h >= 2147483648 else h


def murmurhash3_32(strings: Any, seed: int = 0) -> np.ndarray:
    """Signed 32-bit MurmurHash3 (x86) of the UTF-8 bytes of each string.

    Parameters
    ----------
    strings : sequence of str or pyarrow string array
        No nulls.
    seed : int
        The hash seed (unsigned 32-bit).

    Returns
    -------
    ndarray of int64, values in ``[-2**31, 2**31)``
    """
    arr = strings if isinstance(strings, pa.Array) else pa.array(list(strings), pa.large_string())
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    if arr.null_count:
        raise ValueError("strings to hash must not be null")
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64, count=n + 1, offset=8 * arr.offset)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    out = np.empty(n, dtype=np.int64)
    _murmur_kernel(offsets, data, np.int64(seed & _M32), out)
    return out


@dataclass
class HashedBlock:
    """One block of hashed columns of a feature shard.

    Attributes
    ----------
    columns : list of str
        The data columns hashed into the block.
    n_buckets : int
        Design columns of the block.
    signed : bool
        Whether values carry the sign of the hash.
    """

    columns: list[str] = field(default_factory=list)
    n_buckets: int = 1
    signed: bool = False

    @property
    def name(self) -> str:
        """The block's name in feature names: its columns joined by ``+``."""
        return "+".join(self.columns)

    def feature_names(self) -> list[str]:
        """``name#j`` for every bucket ``j``."""
        return [f"{self.name}#{j}" for j in range(self.n_buckets)]

    def encode_levels(self, levels: list[np.ndarray], n: int) -> sp.csr_matrix:
        """The block's CSR rows (float64, sorted indices, no explicit zeros).

        Parameters
        ----------
        levels : list of ndarray of object
            Per column of the block (in :attr:`columns` order), every row's level as a
            string, None for null.
        n : int
            Number of rows.
        """
        rows_parts, cols_parts, vals_parts = [], [], []
        for col, values in zip(self.columns, levels, strict=True):
            values = np.asarray(values, dtype=object)
            present = np.flatnonzero(pd.notna(values))
            if not len(present):
                continue
            codes, uniques = pd.factorize(values[present])
            keys = pa.array([f"{col}={u}" for u in uniques], pa.large_string())
            h = murmurhash3_32(keys)
            bucket = np.abs(h) % self.n_buckets
            sign = np.where(h >= 0, 1.0, -1.0) if self.signed else np.ones(len(h))
            rows_parts.append(present.astype(np.int64))
            cols_parts.append(bucket[codes])
            vals_parts.append(sign[codes])
        if not rows_parts:
            return sp.csr_matrix((n, self.n_buckets), dtype=np.float64)
        mat = sp.coo_matrix(
            (np.concatenate(vals_parts), (np.concatenate(rows_parts), np.concatenate(cols_parts))),
            shape=(n, self.n_buckets),
        ).tocsr()
        mat.sum_duplicates()
        mat.eliminate_zeros()
        mat.sort_indices()
        return mat

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (saved in ``features.json``)."""
        return {"columns": list(self.columns), "n_buckets": self.n_buckets, "signed": self.signed}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HashedBlock:
        """Inverse of :meth:`to_dict`."""
        return cls([str(c) for c in raw["columns"]], int(raw["n_buckets"]), bool(raw["signed"]))

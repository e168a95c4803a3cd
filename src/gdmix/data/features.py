"""Feature encoding: index maps from feature keys to design-matrix columns.

A :class:`FeatureIndex` is built once from the training data of a coordinate and
saved with the model, so that scoring data is encoded into the same columns.
Columns are laid out as: numeric columns, then one column per level of each
categorical column, then one column per ``(name, term)`` key of each feature bag, then
one column per vocabulary term of each text column (:mod:`gdmix.data.text_features`),
then the buckets of each hashed block (:mod:`gdmix.data.hashing`). Categorical levels,
bag keys and words not seen in training are ignored when encoding. A feature matrix
passed beside the table (:mod:`gdmix.data.matrices`) adds its columns last, under the
names recorded at training.

:meth:`FeatureIndex.encode` is the fast path the solvers use: a shard of numeric columns
only becomes a dense float block straight from the table's memory (no copy when the
columns are one float64 block, as Arrow's ``to_pandas`` lays them out), optionally
permuted into another row order in the same pass; any other shard a CSR matrix built
block by block. :meth:`FeatureIndex.transform` always returns CSR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from numba import prange

from gdmix.config import FeatureConfig
from gdmix.data.hashing import HashedBlock
from gdmix.data.layout import empty_touched
from gdmix.data.matrices import FeatureMatrix, align_matrix
from gdmix.data.schema import (
    check_finite_numeric,
    check_numeric_dtype,
    first_non_finite,
    known_finite,
    mark_finite,
    require_columns,
)
from gdmix.data.text_features import TextVocabulary, text_values
from gdmix.errors import DataError
from gdmix.jit_variants import serial_and_parallel

__all__ = ["FeatureIndex", "scatter_rows"]

_SEP = "\x1f"
#: Below this many values, compiled loops run on one thread.
_PARALLEL_MIN_VALUES = 1_000_000


def _scatter_py(src, positions, out):
    for i in prange(src.shape[0]):
        p = positions[i]
        for j in range(src.shape[1]):
            out[p, j] = src[i, j]


_scatter_ser, _scatter_par = serial_and_parallel(_scatter_py)


def scatter_rows(src: np.ndarray, positions: np.ndarray, dtype: Any = None) -> np.ndarray:
    """A C-ordered copy of ``src`` (2-D, any memory layout) with row ``i`` at row
    ``positions[i]``.

    One compiled pass that reads ``src`` in order and writes each row once: a table
    whose columns lie apart in memory is permuted with one random write per row, not
    one per value.

    Parameters
    ----------
    src : ndarray, shape (n, d)
        The rows to place.
    positions : ndarray of int64, shape (n,)
        A permutation of ``range(n)``: where each row goes.
    dtype : dtype, optional
        Of the result (``src``'s by default).

    Returns
    -------
    ndarray, shape (n, d)
    """
    out = empty_touched(src.shape, dtype=dtype or src.dtype)
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    if len(positions) != src.shape[0]:
        raise ValueError("positions must have one entry per row")
    if src.size:
        kernel = _scatter_par if src.size >= _PARALLEL_MIN_VALUES else _scatter_ser
        kernel(src, positions, out)
    return out


def _row_counts_py(block, counts):  # type: ignore[no-untyped-def]
    for i in prange(block.shape[0]):
        c = 0
        for j in range(block.shape[1]):
            if block[i, j] != 0.0:
                c += 1
        counts[i] = c


def _fill_csr_py(block, indptr, indices, data):  # type: ignore[no-untyped-def]
    for i in prange(block.shape[0]):
        q = indptr[i]
        for j in range(block.shape[1]):
            v = block[i, j]
            if v != 0.0:
                indices[q] = j
                data[q] = v
                q += 1


_row_counts = dict(zip((False, True), serial_and_parallel(_row_counts_py), strict=True))
_fill_csr = dict(zip((False, True), serial_and_parallel(_fill_csr_py), strict=True))


def _csr_from_dense(block: np.ndarray) -> sp.csr_matrix:
    """CSR (float64, sorted indices) of a dense block without explicit zeros, in two
    compiled passes over the rows."""
    n, d = block.shape
    if block.size == 0:
        return sp.csr_matrix((n, d), dtype=np.float64)
    threaded = block.size >= _PARALLEL_MIN_VALUES
    counts = np.empty(n, dtype=np.int64)
    _row_counts[threaded](block, counts)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    del counts
    nnz = int(indptr[-1])
    index_type = np.int32 if max(nnz, d) <= np.iinfo(np.int32).max else np.int64
    indices = empty_touched(nnz, index_type)
    data = empty_touched(nnz)
    _fill_csr[threaded](block, indptr, indices, data)
    mat = sp.csr_matrix((data, indices, indptr.astype(index_type)), shape=(n, d))
    mat.has_sorted_indices = True
    return mat


def _bag_arrays(frame: pd.DataFrame, column: str, where: str) -> tuple[np.ndarray, ...]:
    """Flatten a list<struct<name, term, value>> column: (row, key, value) arrays."""
    try:
        arr = pa.array(frame[column], from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataError(
            f"{where}: bag column '{column}' must hold lists of {{name, term, value}} "
            f"records: {err}"
        ) from None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_null(arr.type):  # every row null (e.g. read back from Parquet): no features
        empty = np.zeros(0)
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object), empty
    if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type):
        raise DataError(
            f"{where}: bag column '{column}' must be list<struct<name, term, value>>. "
            f"Got {arr.type} instead"
        )
    flat = pc.list_flatten(arr)
    rows = np.asarray(pc.list_parent_indices(arr), dtype=np.int64)
    if len(flat) == 0:
        empty = np.zeros(0)
        return rows, np.zeros(0, dtype=object), empty
    if not pa.types.is_struct(flat.type) or not {"name", "value"} <= {
        flat.type.field(i).name for i in range(flat.type.num_fields)
    }:
        raise DataError(
            f"{where}: bag column '{column}' items must be structs with fields name, "
            f"term, value. Got {flat.type} instead"
        )
    names = flat.field("name").to_numpy(zero_copy_only=False).astype(str)
    has_term = "term" in {flat.type.field(i).name for i in range(flat.type.num_fields)}
    terms = (
        flat.field("term").fill_null("").to_numpy(zero_copy_only=False).astype(str)
        if has_term
        else np.full(len(names), "", dtype=str)
    )
    values = flat.field("value").to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{where}: bag column '{column}' has NaN/inf values")
    keys = np.char.add(np.char.add(names, _SEP), terms).astype(object)
    return rows, keys, values


def _category_strings(series: pd.Series) -> np.ndarray:
    """Category levels as strings (None for nulls), the same for any numeric dtype.

    An integer column with nulls turns float in pandas; whole-number floats are written
    without the ".0" so that 3 and 3.0 are one level.
    """
    values = series.to_numpy(dtype=object)
    nulls = series.isna().to_numpy()
    if pd.api.types.is_float_dtype(series):
        finite = series.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = ~nulls & np.isfinite(finite) & (finite == np.round(finite))
        values[whole] = finite[whole].astype(np.int64)
    out = np.array([str(v) for v in values], dtype=object)
    out[nulls] = None
    return out


@dataclass
class FeatureIndex:
    """Index map of one feature shard.

    Attributes
    ----------
    numeric : list of str
        Numeric columns, in design order.
    categorical : dict of str to list of str
        For each categorical column, its levels (as strings) in design order.
    bags : dict of str to list of str
        For each bag column, its ``name\\x1fterm`` keys in design order.
    matrix : list of str
        Names of the columns of a feature matrix passed beside the table (empty: none),
        in design order, after every column of the table.
    text : dict of str to TextVocabulary
        For each text column, its vocabulary (terms in design order, idf).
    hashed : list of HashedBlock
        Blocks of hashed categorical columns, in design order.
    """

    numeric: list[str] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    bags: dict[str, list[str]] = field(default_factory=dict)
    matrix: list[str] = field(default_factory=list)
    text: dict[str, TextVocabulary] = field(default_factory=dict)
    hashed: list[HashedBlock] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        frame: pd.DataFrame,
        spec: FeatureConfig,
        where: str,
        *,
        matrix: FeatureMatrix | None = None,
    ) -> FeatureIndex:
        """Build the index map of ``spec`` from training data ``frame`` (and the names
        of ``matrix``, the coordinate's feature matrix, when given).

        Raises
        ------
        DataError
            When a column is missing or malformed, or a matrix column's name is also the
            name of a table feature.
        """
        require_columns(frame, spec.columns(), where)
        cats = {}
        for col in spec.categorical:
            levels = _category_strings(frame[col])
            cats[col] = sorted({v for v in levels.tolist() if v is not None})
        bags = {}
        for col in spec.bags:
            _, keys, _ = _bag_arrays(frame, col, where)
            bags[col] = sorted(set(keys.tolist()))
        text = {
            t.column: TextVocabulary.count(
                t.column, text_values(frame, t.column, where), t.model_dump()
            )
            for t in spec.text
        }
        hashed = [HashedBlock(list(h.columns), h.n_buckets, h.signed) for h in spec.hashed]
        index = cls(numeric=list(spec.numeric), categorical=cats, bags=bags, text=text,
                    hashed=hashed)  # fmt: skip
        if matrix is not None:
            clash = sorted(set(index.feature_names()) & set(matrix.column_names()))[:5]
            if clash:
                raise DataError(
                    f"{where}: feature matrix column name(s) {clash} are also features of the "
                    "table; rename the matrix columns"
                )
            index.matrix = matrix.column_names()
        return index

    def union(self, other: FeatureIndex) -> FeatureIndex:
        """Index map over the levels and keys of both (built from two parts of the data;
        text vocabularies add up their counts)."""
        cats = {
            c: sorted(set(v) | set(other.categorical.get(c, [])))
            for c, v in self.categorical.items()
        }
        bags = {c: sorted(set(v) | set(other.bags.get(c, []))) for c, v in self.bags.items()}
        text = {c: v.union(other.text[c]) if c in other.text else v for c, v in self.text.items()}
        return FeatureIndex(numeric=list(self.numeric), categorical=cats, bags=bags,
                            matrix=list(self.matrix), text=text,
                            hashed=list(self.hashed))  # fmt: skip

    @property
    def n_features(self) -> int:
        """Number of design columns."""
        return (
            len(self.numeric)
            + sum(len(v) for v in self.categorical.values())
            + sum(len(v) for v in self.bags.values())
            + sum(len(v) for v in self.text.values())
            + sum(h.n_buckets for h in self.hashed)
            + len(self.matrix)
        )

    def feature_names(self) -> list[str]:
        """Readable name of every design column: ``col``, ``col=level``, ``col[name,term]``,
        ``col[term]`` (text), ``col#bucket`` (hashed; ``a+b#bucket`` for a shared block)."""
        names = list(self.numeric)
        for col, levels in self.categorical.items():
            names += [f"{col}={lv}" for lv in levels]
        for col, keys in self.bags.items():
            names += [f"{col}[{k.replace(_SEP, ',')}]" for k in keys]
        for col, vocab in self.text.items():
            names += [f"{col}[{t}]" for t in vocab.terms]
        for block in self.hashed:
            names += block.feature_names()
        return names + list(self.matrix)

    def columns(self) -> list[str]:
        """Data columns the index reads."""
        return [*self.numeric, *self.categorical, *self.bags, *self.text,
                *(c for h in self.hashed for c in h.columns)]  # fmt: skip

    @property
    def dense(self) -> bool:
        """Whether :meth:`encode` gives a dense block (every column numeric, no matrix)."""
        return (
            not self.categorical
            and not self.bags
            and not self.matrix
            and not self.text
            and not self.hashed
        )

    def numeric_block(self, frame: pd.DataFrame, where: str, dtype: Any = np.float64) -> np.ndarray:
        """The numeric columns as one ``(n, len(numeric))`` array, checked finite.

        No copy when the columns are one block of ``dtype`` in the table's memory (then
        the array is Fortran-ordered and read-only); otherwise one copy.

        Raises
        ------
        DataError
            When a column is missing, not numeric, or holds NaN/inf (or values beyond
            the range of ``dtype``).
        """
        require_columns(frame, self.numeric, where)
        for c in self.numeric:
            check_numeric_dtype(frame, c, where)
        if not self.numeric:
            return np.zeros((len(frame), 0), dtype=dtype)
        with np.errstate(over="ignore"):  # values beyond float32: reported below
            block = frame[self.numeric].to_numpy(dtype=dtype, na_value=np.nan)
        if known_finite(frame, self.numeric, dtype):  # another coordinate checked them
            return block
        row, col = first_non_finite(block)
        if row >= 0:
            name = self.numeric[col]
            check_finite_numeric(frame, name, where)  # raises with details
            raise DataError(
                f"{where}: column '{name}' holds {float(frame[name].iloc[row])!r} (row {row}), "
                f"beyond the range of {np.dtype(dtype).name}"
            )
        mark_finite(frame, self.numeric, dtype)
        return block

    def encode(
        self,
        frame: pd.DataFrame,
        where: str,
        *,
        dtype: Any = np.float64,
        order: np.ndarray | None = None,
        positions: np.ndarray | None = None,
        matrix: FeatureMatrix | None = None,
    ) -> np.ndarray | sp.csr_matrix:
        """Encode ``frame`` for the solvers: a dense block or a CSR matrix.

        A shard of numeric columns only (:attr:`dense`) gives an ``(n, n_features)``
        array of ``dtype``: a read-only view of the table's memory when the columns are
        one block of that type, else one copy; with a row order, one C-ordered copy
        written in a single compiled pass. Other shards give :meth:`transform`'s CSR
        matrix (float64).

        Parameters
        ----------
        frame : DataFrame
            The table.
        where : str
            Name of the table in messages.
        dtype : dtype
            Of a dense block: float64 (default) or float32.
        order, positions : ndarray of int64, optional
            Rows in another order: result row ``i`` is table row ``order[i]``, and table
            row ``r`` is result row ``positions[r]`` (one is the inverse of the other;
            give either or both).
        matrix : FeatureMatrix, optional
            The feature matrix of these rows, when the index has :attr:`matrix` columns.

        Returns
        -------
        ndarray or csr_matrix
        """
        if np.dtype(dtype) not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype must be float64 or float32. Got {dtype} instead")
        permuted = order is not None or positions is not None
        if not self.dense:
            mat = self.transform(frame, where, matrix=matrix)
            if not permuted:
                return mat
            if order is None:
                order = np.empty(len(positions), dtype=np.int64)
                order[positions] = np.arange(len(positions), dtype=np.int64)
            return mat[order]
        self._check_no_matrix(matrix, where)
        block = self.numeric_block(frame, where, dtype)
        if not permuted:
            return block
        if positions is None:
            positions = np.empty(len(order), dtype=np.int64)
            positions[order] = np.arange(len(order), dtype=np.int64)
        return scatter_rows(block, positions)

    def _check_no_matrix(self, matrix: FeatureMatrix | None, where: str) -> None:
        if matrix is not None and not self.matrix:
            raise DataError(
                f"{where}: a feature matrix was given, but the coordinate was trained without "
                "one; leave it out"
            )

    def transform(
        self, frame: pd.DataFrame, where: str, *, matrix: FeatureMatrix | None = None
    ) -> sp.csr_matrix:
        """Encode ``frame`` into a CSR design matrix (float64) of ``n_features`` columns.

        Each block (numeric, each categorical, bag, text column and hashed block) is built
        directly in CSR form
        and the blocks are stacked side by side: no coordinate-format sort of every value.
        ``matrix`` (the rows' feature matrix) is required when the index has
        :attr:`matrix` columns, and its columns come last, in the model's order.
        """
        require_columns(frame, self.columns(), where)
        self._check_no_matrix(matrix, where)
        n = len(frame)
        blocks: list[sp.csr_matrix] = []
        if self.numeric:
            blocks.append(_csr_from_dense(self.numeric_block(frame, where)))
        for col, levels in self.categorical.items():
            strs = _category_strings(frame[col])
            codes = pd.Index(levels, dtype=object).get_indexer(strs).astype(np.int64)
            present = codes >= 0
            indptr = np.concatenate([[0], np.cumsum(present)])
            blocks.append(sp.csr_matrix((np.ones(int(present.sum())), codes[present], indptr),
                                        shape=(n, len(levels))))  # fmt: skip
        for col, keys in self.bags.items():
            r, k, v = _bag_arrays(frame, col, where)
            idx = pd.Index(keys).get_indexer(k) if len(k) else np.zeros(0, dtype=np.int64)
            keep = idx >= 0
            rows = r[keep]  # parent rows come in order, so this is already row-major
            indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
            bag = sp.csr_matrix((v[keep], idx[keep], indptr), shape=(n, len(keys)))
            bag.sum_duplicates()  # a key repeated in one row adds up
            blocks.append(bag)
        for col, vocab in self.text.items():
            blocks.append(vocab.transform(text_values(frame, col, where)))
        for block in self.hashed:
            levels = [_category_strings(frame[c]) for c in block.columns]
            blocks.append(block.encode_levels(levels, n))
        if self.matrix:
            if matrix is not None and matrix.n_rows != n:
                raise DataError(
                    f"{where}: the feature matrix has {matrix.n_rows} rows but the table {n}"
                )
            block = align_matrix(matrix, self.matrix, where)
            if not blocks:
                return block  # canonical float64 CSR already
            blocks.append(block)
        if not blocks:
            return sp.csr_matrix((n, 0), dtype=np.float64)
        if self.dense:  # built with sorted indices, float64
            return blocks[0]
        mat = blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr")
        mat = sp.csr_matrix(mat, dtype=np.float64)
        mat.sort_indices()
        return mat

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, saved in the model directory."""
        out: dict[str, Any] = {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "bags": self.bags,
        }
        if self.matrix:
            out["matrix"] = self.matrix
        if self.text:
            out["text"] = [v.to_dict() for v in self.text.values()]
        if self.hashed:
            out["hashed"] = [h.to_dict() for h in self.hashed]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureIndex:
        """Inverse of :meth:`to_dict`."""
        return cls(
            numeric=list(raw["numeric"]),
            categorical={k: list(v) for k, v in raw["categorical"].items()},
            bags={k: list(v) for k, v in raw["bags"].items()},
            matrix=[str(v) for v in raw.get("matrix", [])],
            text={str(v["column"]): TextVocabulary.from_dict(v) for v in raw.get("text", [])},
            hashed=[HashedBlock.from_dict(v) for v in raw.get("hashed", [])],
        )

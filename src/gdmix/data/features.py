"""Feature encoding: index maps from feature keys to design-matrix columns.

A :class:`FeatureIndex` is built once from the training data of a coordinate and
saved with the model, so that scoring data is encoded into the same columns.
Columns are laid out as: numeric columns, then one column per level of each
categorical column, then one column per ``(name, term)`` key of each feature bag.
Categorical levels and bag keys not seen in training are ignored when encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from gdmix.config import FeatureConfig
from gdmix.data.schema import check_finite_numeric, require_columns
from gdmix.errors import DataError

__all__ = ["FeatureIndex"]

_SEP = "\x1f"


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
    """

    numeric: list[str] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    bags: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, frame: pd.DataFrame, spec: FeatureConfig, where: str) -> FeatureIndex:
        """Build the index map of ``spec`` from training data ``frame``."""
        require_columns(frame, spec.columns(), where)
        cats = {}
        for col in spec.categorical:
            levels = _category_strings(frame[col])
            cats[col] = sorted({v for v in levels.tolist() if v is not None})
        bags = {}
        for col in spec.bags:
            _, keys, _ = _bag_arrays(frame, col, where)
            bags[col] = sorted(set(keys.tolist()))
        return cls(numeric=list(spec.numeric), categorical=cats, bags=bags)

    def union(self, other: FeatureIndex) -> FeatureIndex:
        """Index map over the levels and keys of both (built from two parts of the data)."""
        cats = {
            c: sorted(set(v) | set(other.categorical.get(c, [])))
            for c, v in self.categorical.items()
        }
        bags = {c: sorted(set(v) | set(other.bags.get(c, []))) for c, v in self.bags.items()}
        return FeatureIndex(numeric=list(self.numeric), categorical=cats, bags=bags)

    @property
    def n_features(self) -> int:
        """Number of design columns."""
        return (
            len(self.numeric)
            + sum(len(v) for v in self.categorical.values())
            + sum(len(v) for v in self.bags.values())
        )

    def feature_names(self) -> list[str]:
        """Readable name of every design column: ``col``, ``col=level``, ``col[name,term]``."""
        names = list(self.numeric)
        for col, levels in self.categorical.items():
            names += [f"{col}={lv}" for lv in levels]
        for col, keys in self.bags.items():
            names += [f"{col}[{k.replace(_SEP, ',')}]" for k in keys]
        return names

    def columns(self) -> list[str]:
        """Data columns the index reads."""
        return [*self.numeric, *self.categorical, *self.bags]

    def transform(self, frame: pd.DataFrame, where: str) -> sp.csr_matrix:
        """Encode ``frame`` into a CSR design matrix (float64) of ``n_features`` columns.

        Each block (numeric, each categorical, each bag) is built directly in CSR form
        and the blocks are stacked side by side: no coordinate-format sort of every value.
        """
        require_columns(frame, self.columns(), where)
        n = len(frame)
        blocks: list[sp.csr_matrix] = []
        if self.numeric:
            block = np.empty((n, len(self.numeric)))
            for i, c in enumerate(self.numeric):
                block[:, i] = check_finite_numeric(frame, c, where)
            blocks.append(sp.csr_matrix(block))
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
        if not blocks:
            return sp.csr_matrix((n, 0), dtype=np.float64)
        mat = blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr")
        mat = sp.csr_matrix(mat, dtype=np.float64)
        mat.sort_indices()
        return mat

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, saved in the model directory."""
        return {"numeric": self.numeric, "categorical": self.categorical, "bags": self.bags}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureIndex:
        """Inverse of :meth:`to_dict`."""
        return cls(
            numeric=list(raw["numeric"]),
            categorical={k: list(v) for k, v in raw["categorical"].items()},
            bags={k: list(v) for k, v in raw["bags"].items()},
        )

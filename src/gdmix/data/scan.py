"""Parquet tables read in batches of rows, for work that does not need the whole table.

Scoring a table larger than memory reads it a batch at a time: only the columns asked
for, in the order of the files (the order :func:`gdmix.data.io.read_table` gives), each
batch a pandas DataFrame with the dtypes a whole read would give.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from gdmix.data.avro import is_avro_source
from gdmix.data.io import arrow_to_pandas
from gdmix.errors import DataError

__all__ = ["DEFAULT_BATCH_ROWS", "ParquetBatches", "parquet_batches"]

#: Rows per batch: a few hundred megabytes of features at most for usual shards.
DEFAULT_BATCH_ROWS = 1_000_000
_PARQUET = (".parquet", ".pq")


class ParquetBatches:
    """The rows of a Parquet file or folder as DataFrames of about ``batch_rows`` rows
    (whole Arrow batches, gathered until they reach it).

    Attributes
    ----------
    path : Path
        The file or folder.
    n_rows : int
        Rows in the whole table (from the files' metadata).
    columns : list of str
        The columns every batch holds.
    """

    def __init__(self, path: Path, dataset: pads.Dataset, columns: list[str], batch_rows: int):
        self.path = path
        self._dataset = dataset
        self.columns = columns
        self._batch_rows = batch_rows
        try:
            self.n_rows = int(dataset.count_rows())
        except (pa.ArrowException, OSError) as err:
            raise _read_error(path, err) from None

    def __iter__(self) -> Iterator[pd.DataFrame]:
        try:
            scanner = self._dataset.scanner(columns=self.columns, batch_size=self._batch_rows)
            pending: list[pa.RecordBatch] = []
            size, yielded = 0, False
            for batch in scanner.to_batches():
                if batch.num_rows == 0:
                    continue
                # Row groups may be smaller than a batch: gather them up to its size.
                pending.append(batch)
                size += batch.num_rows
                if size >= self._batch_rows:
                    yield arrow_to_pandas(pa.Table.from_batches(pending))
                    pending, size, yielded = [], 0, True
            if pending or not yielded:  # the rest, or one empty frame for an empty table
                schema = pa.schema([scanner.projected_schema.field(c) for c in self.columns])
                yield arrow_to_pandas(pa.Table.from_batches(pending, schema=schema))
        except (pa.ArrowException, OSError) as err:
            raise _read_error(self.path, err) from None


def _read_error(path: Path, err: BaseException) -> DataError:
    reason = " ".join(str(err).split())
    return DataError(f"cannot read {path}: {reason}")


def parquet_batches(
    source: object,
    columns: list[str],
    *,
    optional: list[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> ParquetBatches | None:
    """Batches of a Parquet file or folder, or ``None`` for any other source.

    ``None`` (a DataFrame, a CSV file, Avro, a path that does not exist) means: read it whole
    with :func:`gdmix.data.io.read_table`, which also reports what is wrong with it.

    Parameters
    ----------
    source : DataFrame or path
        The table.
    columns : list of str
        Columns to read.
    optional : list of str, optional
        Columns of ``columns`` that may be missing.
    batch_rows : int
        Rows per batch (about: whole Arrow batches are gathered up to it).

    Raises
    ------
    DataError
        When a required column is missing or the files cannot be read.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1. Got {batch_rows} instead")
    if not isinstance(source, str | os.PathLike):
        return None
    path = Path(source)
    if not path.exists() or not (path.is_dir() or path.name.lower().endswith(_PARQUET)):
        return None
    if is_avro_source(path):  # a folder of Avro files: read whole
        return None
    try:
        dataset = pads.dataset(path, format="parquet", partitioning="hive")
        available = set(dataset.schema.names)
    except (pa.ArrowException, OSError) as err:
        raise _read_error(path, err) from None
    wanted = list(dict.fromkeys(columns))
    may_miss = set(optional or [])
    missing = [c for c in wanted if c not in available and c not in may_miss]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    return ParquetBatches(path, dataset, [c for c in wanted if c in available], batch_rows)

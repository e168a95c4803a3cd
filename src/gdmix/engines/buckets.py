"""Hash-partitioning rows by entity into bucket files (the unit of out-of-core work).

Bucket files are uncompressed Arrow IPC files (scratch data, written once, read whole).

Every row goes to bucket ``hash(entity id) % n_buckets``, so all rows of an entity
land in one bucket and a bucket can be solved on its own. The hash is stable across
processes and machines (pandas' ``hash_array``, a keyed SipHash with a fixed key), so
the same entity always lands in the same bucket.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from gdmix.data.entity_keys import int_like
from gdmix.errors import DataError
from gdmix.fsutil import fresh_work_folder

__all__ = [
    "BucketFiles",
    "BucketWriter",
    "entity_buckets",
    "n_buckets_for",
    "partition_by_entity",
]


def entity_buckets(ids: np.ndarray | pd.Series | pa.Array, n_buckets: int) -> np.ndarray:
    """Stable bucket number (int64 in ``[0, n_buckets)``) of every entity id.

    Ids that hold an integer (``42``, ``42.0``, ``"42"``) hash as that integer, so one
    entity lands in one bucket whichever way a table stores its id (see
    :mod:`gdmix.data.entity_keys`); other ids hash as their text.
    """
    if isinstance(ids, pa.ChunkedArray | pa.Array):
        ids = ids.to_numpy(zero_copy_only=False)
    values = np.asarray(ids)
    if values.dtype.kind in "iu":
        hashed = pd.util.hash_array(values.astype(np.int64), categorize=False)
    else:
        ints, ok = int_like(values)
        hashed = np.empty(len(values), dtype=np.uint64)
        hashed[ok] = pd.util.hash_array(ints[ok], categorize=False)
        if not ok.all():
            text = values[~ok].astype(str).astype(object)
            hashed[~ok] = pd.util.hash_array(text, categorize=False)
    return (hashed % np.uint64(n_buckets)).astype(np.int64)


def n_buckets_for(n_rows: int, bytes_per_row: float, memory_budget_bytes: float) -> int:
    """Buckets needed so that one bucket's working set fits in the memory budget.

    ``bytes_per_row`` is the in-memory cost of a row while its bucket is solved (the
    table, its design and the solver's copies); the budget is shared with the rest of
    the process, so a bucket gets a quarter of it.
    """
    per_bucket = max(memory_budget_bytes / 4.0, 1.0)
    return max(1, math.ceil(n_rows * bytes_per_row / per_bucket))


@dataclass
class BucketFiles:
    """Bucket files written by :func:`partition_by_entity`."""

    folder: Path
    n_buckets: int
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def path(self, bucket: int) -> Path:
        """Arrow IPC file of one bucket (absent when the bucket is empty)."""
        return self.folder / f"bucket-{bucket:05d}.arrow"

    def non_empty(self) -> list[int]:
        """Buckets holding at least one row."""
        return [int(b) for b in np.flatnonzero(self.rows)]

    def read(self, bucket: int) -> pd.DataFrame:
        """One bucket as a DataFrame."""
        with pa.memory_map(str(self.path(bucket))) as source:
            return pa.ipc.open_file(source).read_all().to_pandas()


def _dataset(source: str | os.PathLike[str] | list[str]) -> ds.Dataset:
    paths = [str(p) for p in source] if isinstance(source, list) else str(source)
    try:
        return ds.dataset(paths, format="parquet")
    except (FileNotFoundError, pa.ArrowInvalid) as err:
        raise DataError(f"cannot open Parquet data {source}: {err}") from None


def partition_by_entity(
    source: str | os.PathLike[str] | list[str],
    entity: str,
    columns: list[str],
    folder: str | os.PathLike[str],
    n_buckets: int,
    *,
    batch_rows: int = 1_000_000,
    on_batch: Callable[[pd.DataFrame], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> BucketFiles:
    """Stream ``source`` once and write each row into its entity's bucket file.

    Parameters
    ----------
    source : path or list of paths
        Parquet file(s) or folder(s).
    entity : str
        Entity id column.
    columns : list of str
        Columns to keep (``entity`` is added if missing).
    folder : path
        Output folder: new, empty, or made by an earlier run (then emptied); a folder
        holding other files is refused.
    n_buckets : int
        Number of buckets.
    batch_rows : int
        Rows read at a time: the memory of this pass is about one batch.
    on_batch : callable, optional
        Called with every batch as a DataFrame (to build index maps on the way).
    progress : callable, optional
        Called with the number of rows of every batch.

    Returns
    -------
    BucketFiles
    """
    dataset = _dataset(source)
    cols = list(dict.fromkeys([entity, *columns]))
    missing = [c for c in cols if c not in dataset.schema.names]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}")
    with BucketWriter(folder, entity, n_buckets, where=f"{source}") as writer:
        for batch in _batches(dataset, cols, batch_rows):
            if on_batch is not None:
                on_batch(batch.to_pandas())
            writer.write(batch)
            if progress is not None:
                progress(batch.num_rows)
    return writer.files


class BucketWriter:
    """Appends record batches to per-bucket files, each row to its entity's bucket.

    The files are uncompressed Arrow IPC files: scratch data written once and read back
    whole, where Parquet's encoding and compression would cost twenty times the write
    time (3.2 s against 0.18 s for a million rows of 13 columns in 97 buckets).

    Parameters
    ----------
    folder : path
        Output folder: new, empty, or made by an earlier run (then emptied); a folder
        holding other files is refused.
    entity : str
        Entity id column of the batches.
    n_buckets : int
        Number of buckets.
    where : str
        Name of the data in messages.

    Use as a context manager (the files are complete once it exits); :attr:`files`
    describes them.
    """

    def __init__(
        self, folder: str | os.PathLike[str], entity: str, n_buckets: int, *, where: str
    ) -> None:
        self.entity, self.where = entity, where
        out = fresh_work_folder(folder)
        self.files = BucketFiles(out, n_buckets, np.zeros(n_buckets, dtype=np.int64))
        self._writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Append the rows of ``batch`` to their buckets' files."""
        ids = batch.column(self.entity)
        if ids.null_count:
            raise DataError(f"{self.where}: entity column '{self.entity}' has null ids")
        n_buckets = self.files.n_buckets
        buckets = entity_buckets(ids, n_buckets)
        order = np.argsort(buckets, kind="stable")
        counts = np.bincount(buckets, minlength=n_buckets)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        table = table.take(pa.array(order))
        for b in np.flatnonzero(counts):
            part = table.slice(int(bounds[b]), int(counts[b]))
            if b not in self._writers:
                self._writers[b] = pa.ipc.new_file(str(self.files.path(int(b))), table.schema)
            self._writers[b].write_table(part)
        self.files.rows += counts

    def close(self) -> None:
        """Close every bucket file."""
        writers, self._writers = self._writers, {}
        for w in writers.values():
            w.close()

    def __enter__(self) -> BucketWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _batches(dataset: ds.Dataset, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in dataset.to_batches(columns=columns, batch_size=batch_rows):
        if batch.num_rows:
            yield batch

"""Readers for training and scoring data: Parquet (pyarrow), CSV, or a DataFrame."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gdmix.errors import DataError

__all__ = ["TableLike", "read_table", "write_table"]

TableLike = pd.DataFrame | str | os.PathLike[str]


def read_table(source: TableLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a table from a DataFrame, a Parquet file or folder, or a CSV file.

    Parameters
    ----------
    source : DataFrame or path
        A ``pandas.DataFrame`` (returned as is), a ``.parquet`` file, a folder of
        Parquet files (a dataset), or a ``.csv`` / ``.csv.gz`` file.
    columns : list of str, optional
        Read only these columns (Parquet only; ignored for other sources).

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    DataError
        When the path does not exist, is not a supported format, or a requested
        column is missing from a Parquet file.
    """
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    name = path.name.lower()
    try:
        if path.is_dir() or name.endswith((".parquet", ".pq")):
            if columns is not None:
                available = set(pq.ParquetDataset(path).schema.names)
                missing = [c for c in columns if c not in available]
                if missing:
                    raise DataError(f"{path}: missing column(s) {missing}")
            return pq.read_table(path, columns=columns).to_pandas()
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path)
    except (pa.ArrowInvalid, OSError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    raise DataError(f"{path}: unsupported file type (use .parquet, a Parquet folder, or .csv)")


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a DataFrame to Parquet (or CSV if the name ends in .csv), atomically.

    The file is written under a temporary name in the same folder and renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.name.lower().endswith(".csv"):
            frame.to_csv(tmp, index=False)
        else:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

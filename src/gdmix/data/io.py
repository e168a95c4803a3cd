"""Readers and writers of tables: Parquet (pyarrow), CSV, a DataFrame or an Arrow table.

Arrow-typed data reads as users hold it: a ``pyarrow.Table`` becomes a DataFrame as a
Parquet file does, and a Parquet file written from pandas columns of ``pd.ArrowDtype``
(lists of structs, dictionaries, strings) gets those dtypes back instead of failing on
the pandas metadata that names them.

Every failure caused by the file (missing, empty, not UTF-8, not Parquet, a column
missing) is a :class:`gdmix.errors.DataError`, and every failure to write an output
(an unusable path, a full disk) an :class:`gdmix.errors.OutputError`, each with one
line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from gdmix.data.parquet_frame import arrow_to_pandas, read_parquet_frame
from gdmix.errors import DataError, OutputError
from gdmix.fsutil import sibling

__all__ = [
    "TableLike",
    "arrow_to_pandas",
    "check_output_file",
    "check_table_type",
    "output_format",
    "read_table",
    "write_table",
]

TableLike = pd.DataFrame | pa.Table | str | os.PathLike[str]
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz")
_TABLE_TYPES = (
    "a pandas DataFrame, a pyarrow Table, or the path of a Parquet file, Parquet folder or CSV file"
)


def check_table_type(source: object, what: str = "data") -> None:
    """Raise :class:`TypeError` naming what a table may be when ``source`` is none of it.

    A matrix gets a hint: feature matrices go beside a table, in ``features=``.
    """
    if isinstance(source, pd.DataFrame | pa.Table | pa.RecordBatch | str | os.PathLike):
        return
    hint = ""
    if sp.issparse(source) or isinstance(source, np.ndarray):
        hint = (
            "; pass a feature matrix beside the table, as features={'<coordinate>': matrix}, "
            "with the label (and entity) columns in the table"
        )
    raise TypeError(f"{what} must be {_TABLE_TYPES}. Got {type(source).__name__} instead{hint}")


def read_table(
    source: TableLike, columns: list[str] | None = None, *, optional: list[str] | None = None
) -> pd.DataFrame:
    """Read a table from a DataFrame, a Parquet file or folder, or a CSV file.

    Parameters
    ----------
    source : DataFrame, pyarrow Table or path
        A ``pandas.DataFrame`` (returned as is), a ``pyarrow.Table`` (converted as a
        Parquet file is), a ``.parquet`` file, a folder of Parquet files (a dataset), or
        a ``.csv`` / ``.csv.gz`` file (UTF-8), an ``.avro`` file or folder of them, or
        a day range ``ROOT/daily/yyyy/MM/dd..yyyy/MM/dd`` (see :mod:`gdmix.data.avro`
        and :mod:`gdmix.data.dated`).
    columns : list of str, optional
        Read only these columns from a file (a DataFrame is returned whole).
    optional : list of str, optional
        Columns of ``columns`` that may be missing.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    DataError
        When the path does not exist, is empty, is not a supported or readable format, or
        a required column is missing.
    TypeError
        When ``source`` is neither a table nor a path.
    """
    check_table_type(source)
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, pa.Table | pa.RecordBatch):
        table = source if isinstance(source, pa.Table) else pa.Table.from_batches([source])
        if columns is not None:
            may_miss = set(optional or [])
            missing = [c for c in columns if c not in table.column_names and c not in may_miss]
            if missing:
                raise DataError(f"Arrow table: missing column(s) {missing}")
            table = table.select([c for c in dict.fromkeys(columns) if c in table.column_names])
        try:
            return arrow_to_pandas(table)
        except (pa.ArrowException, ValueError) as err:
            reason = " ".join(str(err).split())
            raise DataError(f"cannot convert the Arrow table: {reason}") from None
    from gdmix.data.avro import read_avro_source  # Avro files and folders, day ranges

    frame = read_avro_source(source, columns, optional=optional)
    if frame is not None:
        return frame
    path = Path(source)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    name = path.name.lower()
    wanted = None if columns is None else list(dict.fromkeys(columns))
    may_miss = set(optional or [])
    try:
        if path.is_dir() or name.endswith(_PARQUET):
            if wanted is not None:
                available = set(pq.ParquetDataset(path).schema.names)
                missing = [c for c in wanted if c not in available and c not in may_miss]
                if missing:
                    raise DataError(f"{path}: missing column(s) {missing}")
                wanted = [c for c in wanted if c in available]
            frame = read_parquet_frame(path, wanted)  # numeric columns copied once
            if frame is not None:
                return frame
            # Arrow's buffers are released column by column as pandas takes them over:
            # the peak is about one copy of the table, not two.
            table = pq.read_table(path, columns=wanted)
            return arrow_to_pandas(table, self_destruct=True)
        if name.endswith(_CSV):
            frame = pd.read_csv(path, encoding="utf-8")
            if wanted is not None:
                missing = [c for c in wanted if c not in frame.columns and c not in may_miss]
                if missing:
                    raise DataError(f"{path}: missing column(s) {missing}")
                frame = frame[[c for c in wanted if c in frame.columns]]
            return frame
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty (no header, no rows)") from None
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start}); save it as UTF-8"
        ) from None
    except (pa.ArrowException, OSError, pd.errors.ParserError, ValueError, TypeError) as err:
        if isinstance(err, DataError):
            raise
        reason = " ".join(str(err).split())
        raise DataError(f"cannot read {path}: {reason}") from None
    raise DataError(f"{path}: unsupported file type (use .parquet, a Parquet folder, or .csv)")


def output_format(path: str | os.PathLike[str]) -> str:
    """``"parquet"`` or ``"csv"`` from a file name's extension.

    Raises
    ------
    OutputError
        For any other extension.
    """
    name = Path(path).name.lower()
    if name.endswith(_PARQUET):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    raise OutputError(
        f"{path}: the extension must be .parquet (or .pq) or .csv, which picks the format"
    )


def _inside_model(path: Path) -> Path | None:
    for folder in path.absolute().parents:
        if (folder / "manifest.json").is_file():
            from gdmix.model_dir import is_model_directory

            if is_model_directory(folder):
                return folder
    return None


def check_output_file(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: list[str | os.PathLike[str]] | None = None,
    table: bool = True,
) -> Path:
    """Check, before any work, that a table (or, with ``table=False``, any other output
    file) may be written at ``path``.

    A table's extension must name a format; an existing file is refused unless ``overwrite``;
    a folder, one of ``inputs`` (or a file inside an input folder), or a file inside a
    gdmix model directory is refused always; the folder must be writable.

    Raises
    ------
    OutputError
        Naming the problem.
    """
    from gdmix.model_dir import check_writable_parent

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give the output file's name")
    target = path.resolve()
    for source in inputs or []:
        src = Path(source).resolve()
        if target == src or target.is_relative_to(src):
            raise OutputError(f"{path} is an input of this command; write the output elsewhere")
    model = _inside_model(path)
    if model is not None:
        raise OutputError(f"{path} lies inside the gdmix model directory {model}; write elsewhere")
    if table:
        output_format(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    check_writable_parent(path)
    return path


def write_table(
    frame: pd.DataFrame, path: str | os.PathLike[str], *, overwrite: bool = True
) -> Path:
    """Write a DataFrame as Parquet or CSV (by the extension), atomically.

    The file is written under a temporary name in the same folder and renamed, so a
    reader sees the old file or the new one; on failure nothing is left behind.

    Raises
    ------
    OutputError
        When the path is unusable (see :func:`check_output_file`) or writing fails.
    """
    path = check_output_file(path, overwrite=overwrite)
    fmt = output_format(path)
    tmp = sibling(path, "tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path

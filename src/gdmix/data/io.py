"""Readers and writers of tables: Parquet (pyarrow), CSV, or a DataFrame.

Every failure caused by the file (missing, empty, not UTF-8, not Parquet, a column
missing) is a :class:`gdmix.errors.DataError`, and every failure to write an output
(an unusable path, a full disk) an :class:`gdmix.errors.OutputError`, each with one
line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gdmix.errors import DataError, OutputError
from gdmix.fsutil import sibling

__all__ = ["TableLike", "check_output_file", "output_format", "read_table", "write_table"]

TableLike = pd.DataFrame | str | os.PathLike[str]
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz")


def _check_source(source: object) -> None:
    if not isinstance(source, pd.DataFrame | str | os.PathLike):
        raise TypeError(
            "data must be a pandas DataFrame or the path of a Parquet file, Parquet folder or "
            f"CSV file. Got {type(source).__name__} instead"
        )


def read_table(
    source: TableLike, columns: list[str] | None = None, *, optional: list[str] | None = None
) -> pd.DataFrame:
    """Read a table from a DataFrame, a Parquet file or folder, or a CSV file.

    Parameters
    ----------
    source : DataFrame or path
        A ``pandas.DataFrame`` (returned as is), a ``.parquet`` file, a folder of
        Parquet files (a dataset), or a ``.csv`` / ``.csv.gz`` file (UTF-8).
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
        When ``source`` is neither a DataFrame nor a path.
    """
    _check_source(source)
    if isinstance(source, pd.DataFrame):
        return source
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
            # Arrow's buffers are released column by column as pandas takes them over:
            # the peak is about one copy of the table, not two.
            table = pq.read_table(path, columns=wanted)
            return table.to_pandas(self_destruct=True)
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
    except (pa.ArrowException, OSError, pd.errors.ParserError, ValueError) as err:
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

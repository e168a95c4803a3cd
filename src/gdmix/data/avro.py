"""Avro tables (fastavro): Photon-ML and GAME training records read as gdmix tables.

An ``.avro`` file, a folder of them (read recursively, files in path order; names
starting with ``_`` or ``.``, such as ``_SUCCESS``, are skipped) or a day range of a
date-partitioned folder (``ROOT/daily/2026/11/01..2026/11/07``, see
:mod:`gdmix.data.dated`) becomes one table, column by column from the records' fields:

- a field of numbers, strings or booleans (or a union of one of them with ``null``)
  becomes a column of that type (``int``/``long`` as int64, ``float``/``double`` as
  float64, ``enum`` as strings); a union of several types (``["null", "string",
  "long"]``) becomes strings;
- an array of ``{name, term, value}`` records (a Photon feature bag) becomes a bag
  column, ``list<struct<name: string, term: string, value: double>>``, ready for a
  coordinate's ``features.bags``;
- ``metadataMap`` (a map of strings, where GAME data keeps entity ids) is flattened:
  each key becomes a string column (null where a record lacks it). A top-level field
  of the same name wins over a key;
- any other field (nested records, arrays of numbers) is kept as Arrow infers it.

So ``response``, ``label``, ``weight``, ``offset`` and ``uid`` are ordinary columns, and
the config's ``data.label`` (``response`` for GAME data, ``label`` for Photon's
``TrainingExampleAvro``), ``data.weight``... name the ones to use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from gdmix.data.dated import parse_dated_path, select_days
from gdmix.errors import DataError

__all__ = [
    "AVRO_SUFFIX",
    "BAG_TYPE",
    "METADATA_MAP",
    "avro_files",
    "avro_to_arrow",
    "is_avro_source",
    "read_avro",
    "read_avro_source",
]

AVRO_SUFFIX = ".avro"
#: Field whose string map is flattened into columns.
METADATA_MAP = "metadataMap"
#: Arrow type of a feature bag column.
BAG_TYPE = pa.list_(
    pa.struct([("name", pa.string()), ("term", pa.string()), ("value", pa.float64())])
)
_PRIMITIVES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "int": pa.int64(),
    "long": pa.int64(),
    "float": pa.float64(),
    "double": pa.float64(),
    "string": pa.string(),
    "bytes": pa.binary(),
}


def _fastavro() -> Any:
    try:
        import fastavro
    except ImportError:
        raise DataError("reading Avro needs the 'fastavro' package: install gdmix[avro]") from None
    return fastavro


def _skipped(path: Path, top: Path) -> bool:
    return any(part.startswith(("_", ".")) for part in path.relative_to(top).parts)


def avro_files(path: str | os.PathLike[str]) -> list[Path]:
    """The Avro files of a file or folder (recursively, in path order; names starting
    with ``_`` or ``.`` skipped)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob(f"*{AVRO_SUFFIX}") if p.is_file() and not _skipped(p, path))


def is_avro_source(source: object) -> bool:
    """Whether ``source`` is an ``.avro`` file or a folder holding Avro files (and no
    Parquet files)."""
    if not isinstance(source, str | os.PathLike):
        return False
    path = Path(source)
    if path.is_file():
        return path.name.lower().endswith(AVRO_SUFFIX)
    if not path.is_dir():
        return False
    has_avro = False
    for p in path.rglob("*"):
        name = p.name.lower()
        if name.endswith((".parquet", ".pq")):
            return False
        has_avro = has_avro or (name.endswith(AVRO_SUFFIX) and not _skipped(p, path))
    return has_avro


class _Schema:
    """How each top-level field of an Avro record becomes columns."""

    def __init__(self) -> None:
        #: field -> ("value", arrow type) | ("text", string) | ("bag", BAG_TYPE) |
        #: ("map", None) | ("other", None)
        self.fields: dict[str, tuple[str, pa.DataType | None]] = {}

    def add(self, schema: dict[str, Any], where: Path) -> None:
        named: dict[str, Any] = {}
        _collect_named(schema, named)
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise DataError(f"{where}: the Avro schema must be a record. Got {schema!r}")
        for field in schema["fields"]:
            rule = _rule(field["name"], field["type"], named)
            seen = self.fields.setdefault(field["name"], rule)
            if seen != rule:
                raise DataError(
                    f"{where}: field '{field['name']}' has another type than in the files "
                    f"before it ({field['type']!r})"
                )


def _collect_named(node: Any, named: dict[str, Any]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect_named(item, named)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed") and "name" in node:
            named[node["name"]] = node
            named[node["name"].rsplit(".", 1)[-1]] = node
        for key in ("fields", "items", "values", "type"):
            if key in node:
                _collect_named(node[key], named)


def _resolve(t: Any, named: dict[str, Any]) -> Any:
    if isinstance(t, str) and t not in _PRIMITIVES and t != "null":
        return named.get(t, named.get(t.rsplit(".", 1)[-1], t))
    return t


def _is_bag_item(item: Any) -> bool:
    if not isinstance(item, dict) or item.get("type") != "record":
        return False
    fields = {f["name"]: f["type"] for f in item.get("fields", [])}
    value = fields.get("value")
    return fields.get("name") == "string" and value in ("double", "float", "int", "long")


def _rule(name: str, t: Any, named: dict[str, Any]) -> tuple[str, pa.DataType | None]:
    t = _resolve(t, named)
    if isinstance(t, list):  # a union
        kinds = [_resolve(x, named) for x in t if x != "null"]
        if len(kinds) == 1:
            return _rule(name, kinds[0], named)
        if all(isinstance(k, str) and k in _PRIMITIVES for k in kinds):
            return ("text", pa.string())
        return ("other", None)
    if isinstance(t, str):
        return ("value", _PRIMITIVES[t]) if t in _PRIMITIVES else ("other", None)
    if isinstance(t, dict):
        if "logicalType" in t:
            return ("other", None)
        kind = t.get("type")
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return ("value", _PRIMITIVES[kind])
        if kind == "enum":
            return ("value", pa.string())
        if kind == "array" and _is_bag_item(_resolve(t.get("items"), named)):
            return ("bag", BAG_TYPE)
        if kind == "map" and name == METADATA_MAP:
            return ("map", None)
    return ("other", None)


def _column(values: list[Any], rule: tuple[str, pa.DataType | None], where: str) -> pa.Array:
    kind, arrow_type = rule
    try:
        if kind == "text":
            return pa.array([None if v is None else str(v) for v in values], type=pa.string())
        if kind == "bag":
            return pa.array(values, type=BAG_TYPE)
        return pa.array(values, type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
        raise DataError(f"{where}: cannot convert the values: {err}") from None


def _file_table(path: Path, schema: _Schema, wanted: set[str] | None, fastavro: Any) -> pa.Table:
    """One Avro file as an Arrow table (only the ``wanted`` columns, when given)."""
    try:
        with open(path, "rb") as fo:
            reader = fastavro.reader(fo)
            schema.add(reader.writer_schema, path)
            names = [f["name"] for f in reader.writer_schema["fields"]]
            records = list(reader)
    except (ValueError, OSError, EOFError, TypeError, KeyError, IndexError) as err:
        if isinstance(err, DataError):
            raise
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"cannot read {path} as Avro: {reason}") from None
    columns: dict[str, pa.Array] = {}
    for name in names:
        rule = schema.fields[name]
        if rule[0] == "map":
            continue
        if wanted is None or name in wanted:
            columns[name] = _column([r.get(name) for r in records], rule, f"{path}, field '{name}'")
    for name in names:
        if schema.fields[name][0] != "map":
            continue
        maps = [r.get(name) or {} for r in records]
        keys = sorted({k for m in maps for k in m})
        for key in keys:
            if key in columns or key in schema.fields or (wanted is not None and key not in wanted):
                continue
            values = [m.get(key) for m in maps]
            columns[key] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns)


def avro_to_arrow(
    files: Iterable[Path],
    columns: list[str] | None = None,
    *,
    optional: list[str] | None = None,
    where: str = "Avro data",
) -> pa.Table:
    """Read Avro files into one Arrow table (see the module's doc for the mapping).

    Raises
    ------
    DataError
        When a file is not Avro, a field changes type between files, or a required
        column is missing.
    """
    fastavro = _fastavro()
    files = list(files)
    if not files:
        raise DataError(f"{where}: no Avro files found")
    wanted = None if columns is None else set(columns)
    schema = _Schema()
    tables = [_file_table(p, schema, wanted, fastavro) for p in files]
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataError(f"{where}: the files' columns do not agree: {err}") from None
    if columns is not None:
        may_miss = set(optional or [])
        missing = [c for c in dict.fromkeys(columns) if c not in table.column_names]
        missing = [c for c in missing if c not in may_miss]
        if missing:
            raise DataError(f"{where}: missing column(s) {missing}")
        table = table.select([c for c in dict.fromkeys(columns) if c in table.column_names])
    return table


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Nested columns (bags) keep their Arrow type (``pd.ArrowDtype``), as a Parquet file
    written from such columns gives them back; the others become numpy columns."""
    nested = {f.type: pd.ArrowDtype(f.type) for f in table.schema if pa.types.is_nested(f.type)}
    return table.to_pandas(types_mapper=nested.get if nested else None)


def read_avro(
    source: str | os.PathLike[str] | list[Path],
    columns: list[str] | None = None,
    *,
    optional: list[str] | None = None,
) -> pd.DataFrame:
    """Read an Avro file, a folder of Avro files, or a list of Avro files.

    Parameters
    ----------
    source : path or list of paths
        The file(s) or folder.
    columns : list of str, optional
        Read only these columns (field names and ``metadataMap`` keys).
    optional : list of str, optional
        Columns of ``columns`` that may be missing.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    DataError
        When there is no Avro file, a file cannot be read, or a column is missing.
    """
    if isinstance(source, list):
        files, where = source, "Avro data"
    else:
        files, where = avro_files(source), str(source)
        if not Path(source).exists():
            raise DataError(f"data file {source} does not exist")
    return _to_pandas(avro_to_arrow(files, columns, optional=optional, where=where))


def read_avro_source(
    source: object, columns: list[str] | None = None, *, optional: list[str] | None = None
) -> pd.DataFrame | None:
    """Read ``source`` when it is Avro or a day range; None for anything else (the
    caller reads it as Parquet or CSV).

    A day range (``ROOT/daily/yyyy/MM/dd..yyyy/MM/dd``) is read day folder by day
    folder: Avro days as one table, other days (Parquet) each with
    :func:`gdmix.data.io.read_table`, their rows concatenated oldest day first.
    """
    if parse_dated_path(source) is not None:
        assert isinstance(source, str | os.PathLike)
        days = select_days(source)
        if all(is_avro_source(d) for d in days):
            files = [f for d in days for f in avro_files(d)]
            table = avro_to_arrow(files, columns, optional=optional, where=os.fspath(source))
            return _to_pandas(table)
        from gdmix.data.io import read_table

        frames = [read_table(d, columns, optional=optional) for d in days]
        return pd.concat(frames, ignore_index=True)
    if is_avro_source(source):
        assert isinstance(source, str | os.PathLike)
        return read_avro(source, columns, optional=optional)
    return None

"""The request schema of ``POST /score``, checked field by field without pandas.

A request body is one JSON object::

    {"context": {"user_id": 42, "age": 31},          optional: fields shared by all rows
     "rows": [{"item_id": 7, "price": 9.5}, ...]}    one object per row to score

Each row's fields are its own plus the context's (a field may not be in both). Which
fields are needed, and of what type, follows from the model (see :class:`InputSpec`):

- a numeric feature: a finite number (``true``/``false`` count as 1/0);
- a categorical feature: a string, number or boolean of the type the model was trained
  on, or ``null`` (no level); a level not seen in training is ignored, as in batch
  scoring;
- a feature bag: a list of ``{"name": str, "term": str, "value": number}`` (``term``
  optional) or ``null``;
- a text feature: a string or ``null``;
- an entity id: an integer, a whole float or a string (``42``, ``42.0`` and ``"42"`` are
  one entity); an id not seen in training scores 0 for that random effect;
- the offset column, when the model has one: a finite number within +-100.

Every problem is a :class:`RequestError` naming the field (``rows[3].price``,
``context.user_id``), the rule and the value: HTTP 400 for a body that is not such an
object, 413 for too many rows, 422 for a bad field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gdmix.data.roles import MAX_ABS_OFFSET

__all__ = ["BAG_SEP", "InputSpec", "Request", "RequestError", "dumps"]

#: Separator of a bag feature's name and term in index-map keys (as in FeatureIndex).
BAG_SEP = "\x1f"
_MISSING = object()
_TOP_KEYS = frozenset({"rows", "context"})


try:  # a faster codec when installed (the 'serve' extra has it); the same values either way
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    _orjson = None


def _loads(body: bytes) -> Any:
    """Parse a JSON body. ``NaN`` and ``Infinity`` literals (and numbers beyond float64)
    parse to floats so that the field holding them is named by the checks."""
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            pass  # NaN literals, integers beyond 64 bits, or bad JSON: the standard parser says
    try:
        return json.loads(body, parse_constant=float)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise RequestError("body", f"is not valid JSON ({err})", 400) from None


def dumps(payload: Any) -> bytes:
    """JSON bytes of a response (floats written to the last bit)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(payload)
        except TypeError:  # an integer beyond 64 bits echoed back in a uid: the slow path
            pass
    return json.dumps(payload).encode()


class RequestError(Exception):
    """A bad request: ``status`` (4xx), the ``field`` at fault and a message.

    Parameters
    ----------
    field : str
        Where the problem is (``rows[2].x``, ``context.user_id``, ``rows``, ``body``).
    message : str
        What is wrong, with the value received.
    status : int
        HTTP status: 400 (malformed body), 413 (too large) or 422 (bad field).
    """

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        """JSON body of the error response."""
        return {"error": str(self), "field": self.field}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"string {text!r}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _float(value: Any, where: str) -> float:
    """A finite float from a JSON number (booleans are 1/0)."""
    t = type(value)
    if t is float:
        if value - value == 0.0:
            return value
        raise RequestError(where, f"must be a finite number. Got {value!r}")
    if t is int or t is bool:
        try:
            return float(value)
        except OverflowError:
            raise RequestError(where, "must be a finite number. Got one beyond float64") from None
    raise RequestError(where, f"must be a number. Got {_json_type(value)}")


@dataclass
class InputSpec:
    """The fields a model reads, by use (built once per loaded version).

    Attributes
    ----------
    numeric : set of str
        Numeric feature columns.
    categorical : dict of str to str or None
        Categorical columns and the kind of value they were trained on (``string``,
        ``number``, ``bool``; None when unknown).
    bags, texts, entities : set of str
        Feature-bag, text and entity-id columns.
    offset : str or None
        The offset column.
    uid : str or None
        The uid column (echoed in responses when rows carry it).
    """

    numeric: set[str] = field(default_factory=set)
    categorical: dict[str, str | None] = field(default_factory=dict)
    bags: set[str] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)
    entities: set[str] = field(default_factory=set)
    offset: str | None = None
    uid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (what ``GET /model`` shows under ``inputs``)."""
        return {
            "numeric": sorted(self.numeric),
            "categorical": dict(sorted(self.categorical.items())),
            "bags": sorted(self.bags),
            "texts": sorted(self.texts),
            "entities": sorted(self.entities),
            "offset": self.offset,
            "uid": self.uid,
        }


_PLAIN_NUMBERS = frozenset({float, int})
_KIND_NAMES = {"string": "a string", "number": "a number", "bool": "a boolean"}


def _level_ok(value: Any, kind: str | None) -> bool:
    """Whether a (non-null) categorical value has the kind the model was trained on."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, str | int | float)


class Request:
    """A parsed ``POST /score`` body: its rows and context, read column by column.

    Each accessor checks every row's value of one column, raises :class:`RequestError`
    naming the first bad one, and caches its result (a column read by two coordinates is
    checked once).

    Parameters
    ----------
    rows : list of dict
        The rows' own fields.
    context : dict
        Fields shared by every row.
    """

    def __init__(self, rows: list[dict[str, Any]], context: dict[str, Any] | None = None) -> None:
        self.rows = rows
        self.context = context or {}
        self.n = len(rows)
        self._cache: dict[tuple[str, str], Any] = {}

    @classmethod
    def parse(cls, body: bytes, *, max_rows: int = 10_000) -> Request:
        """Parse and shape-check a JSON body (fields are checked when read).

        Raises
        ------
        RequestError
            400 when the body is not JSON or not ``{"rows": [...], "context": {...}}``,
            413 when it has more than ``max_rows`` rows.
        """
        raw = _loads(body)
        if not isinstance(raw, dict):
            raise RequestError(
                "body", f'must be a JSON object {{"rows": [...]}}. Got {_json_type(raw)}', 400
            )
        unknown = sorted(set(raw) - _TOP_KEYS)
        if unknown:
            raise RequestError(
                unknown[0], "unknown top-level field; a body has 'rows' and optionally 'context'",
                400,
            )  # fmt: skip
        rows = raw.get("rows", _MISSING)
        if rows is _MISSING:
            raise RequestError("rows", "missing: a body needs a list of rows to score", 400)
        if not isinstance(rows, list) or not rows:
            raise RequestError("rows", f"must be a non-empty list. Got {_json_type(rows)}", 400)
        if len(rows) > max_rows:
            raise RequestError("rows", f"has {len(rows)} rows; at most {max_rows} per request", 413)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(f"rows[{i}]", f"must be an object. Got {_json_type(row)}", 400)
        context = raw.get("context", None)
        if context is None:
            context = {}
        elif not isinstance(context, dict):
            raise RequestError("context", f"must be an object. Got {_json_type(context)}", 400)
        return cls(rows, context)

    # -- raw values -----------------------------------------------------------------
    def values(self, column: str, use: str) -> tuple[list[Any], list[str] | None]:
        """Every row's value of ``column`` and, when any comes from the context, the
        field names (None: all from the rows, named ``rows[i].column``).

        Raises
        ------
        RequestError
            When a row lacks the field (and the context too), or has it as well as the
            context.
        """
        shared = self.context.get(column, _MISSING)
        if shared is not _MISSING:
            for i, row in enumerate(self.rows):
                if column in row:
                    raise RequestError(
                        f"rows[{i}].{column}", "is given both here and in the context; give it once"
                    )
            return [shared] * self.n, [f"context.{column}"] * self.n
        out = []
        for i, row in enumerate(self.rows):
            value = row.get(column, _MISSING)
            if value is _MISSING:
                raise RequestError(f"rows[{i}].{column}", f"missing ({use} the model reads)")
            out.append(value)
        return out, None

    def _where(self, column: str, names: list[str] | None, i: int) -> str:
        return names[i] if names is not None else f"rows[{i}].{column}"

    # -- typed columns --------------------------------------------------------------
    def numeric(self, column: str) -> np.ndarray:
        """The column as finite float64 values."""
        key = (column, "numeric")
        hit = self._cache.get(key)
        if hit is None:
            values, names = self.values(column, "a numeric feature")
            if names is not None:  # one value from the context
                hit = np.full(self.n, _float(values[0], names[0]))
            else:
                hit = None
                if set(map(type, values)) <= _PLAIN_NUMBERS:
                    try:
                        hit = np.array(values, dtype=np.float64)
                    except OverflowError:
                        hit = None
                    if hit is not None and not np.isfinite(hit).all():
                        hit = None
                if hit is None:  # the slow path finds and names the bad value
                    hit = np.array([_float(v, f"rows[{i}].{column}") for i, v in enumerate(values)],
                                   dtype=np.float64)  # fmt: skip
            self._cache[key] = hit
        return hit

    def numeric_block(self, columns: tuple[str, ...]) -> np.ndarray:
        """Numeric columns side by side, a C-ordered ``(n, len(columns))`` float64 block
        (cached: coordinates reading the same columns share it; do not write to it)."""
        key = (columns, "block")
        hit = self._cache.get(key)
        if hit is None:
            if not columns:
                hit = np.zeros((self.n, 0))
            elif len(columns) == 1:
                hit = self.numeric(columns[0]).reshape(-1, 1)
            else:
                hit = np.empty((self.n, len(columns)))
                for j, column in enumerate(columns):
                    hit[:, j] = self.numeric(column)
            self._cache[key] = hit
        return hit

    def offset(self, column: str) -> np.ndarray:
        """The offset column: finite numbers within +-MAX_ABS_OFFSET."""
        values = self.numeric(column)
        big = np.abs(values) > MAX_ABS_OFFSET
        if big.any():
            i = int(np.flatnonzero(big)[0])
            names = self.values(column, "the offset")[1]
            raise RequestError(
                self._where(column, names, i),
                f"is {values[i]:g}; an offset is a logit and must lie within +-{MAX_ABS_OFFSET:g}",
            )
        return values

    def levels(self, column: str, kind: str | None) -> list[Any]:
        """The column's raw categorical values (None for null), checked against the
        kind the model was trained on."""
        key = (column, "categorical")
        hit = self._cache.get(key)
        if hit is None:
            values, names = self.values(column, "a categorical feature")
            for i, v in enumerate(values):
                if v is None:
                    continue
                if not _level_ok(v, kind):
                    want = _KIND_NAMES.get(kind or "", "a string, number or boolean")
                    trained = (
                        f" (the model was trained on {kind} values)" if kind in _KIND_NAMES else ""
                    )
                    raise RequestError(
                        self._where(column, names, i),
                        f"must be {want}{trained} or null. Got {_json_type(v)}",
                    )
                if isinstance(v, float) and not v - v == 0.0:
                    raise RequestError(self._where(column, names, i), f"must be finite. Got {v!r}")
            hit = values
            self._cache[key] = hit
        return hit

    def entity_ids(self, column: str) -> list[Any]:
        """The column's entity ids: integers, finite floats or strings."""
        key = (column, "entity")
        hit = self._cache.get(key)
        if hit is None:
            values, names = self.values(column, "an entity id")
            for i, v in enumerate(values):
                t = type(v)
                if t is str or t is int:
                    continue
                if t is float and v - v == 0.0:
                    continue
                raise RequestError(
                    self._where(column, names, i),
                    f"an entity id must be an integer or a string. Got {_json_type(v)}",
                )
            hit = values
            self._cache[key] = hit
        return hit

    def bags(self, column: str) -> list[list[tuple[str, float]]]:
        """The column's bags: per row, ``(name + BAG_SEP + term, value)`` pairs in order."""
        key = (column, "bag")
        hit = self._cache.get(key)
        if hit is None:
            values, names = self.values(column, "a feature bag")
            hit = []
            for i, v in enumerate(values):
                where = self._where(column, names, i)
                if v is None:
                    hit.append([])
                    continue
                if not isinstance(v, list):
                    raise RequestError(
                        where, f"must be a list of {{name, term, value}} objects or null. Got "
                        f"{_json_type(v)}",
                    )  # fmt: skip
                hit.append([_bag_item(item, f"{where}[{j}]") for j, item in enumerate(v)])
            self._cache[key] = hit
        return hit

    def texts(self, column: str) -> list[str]:
        """The column's texts (null is the empty text)."""
        key = (column, "text")
        hit = self._cache.get(key)
        if hit is None:
            values, names = self.values(column, "a text feature")
            hit = []
            for i, v in enumerate(values):
                if v is None:
                    hit.append("")
                elif isinstance(v, str):
                    hit.append(v)
                else:
                    raise RequestError(
                        self._where(column, names, i),
                        f"must be a string or null. Got {_json_type(v)}",
                    )
            self._cache[key] = hit
        return hit

    def optional(self, column: str) -> list[Any] | None:
        """Every row's value of ``column`` (None where absent), or None when no row or
        context has it (used to echo the uid)."""
        if column in self.context:
            return [self.context[column]] * self.n
        if not any(column in row for row in self.rows):
            return None
        return [row.get(column) for row in self.rows]


def _bag_item(item: Any, where: str) -> tuple[str, float]:
    if not isinstance(item, dict):
        raise RequestError(
            where, f"must be an object {{name, term, value}}. Got {_json_type(item)}"
        )
    name = item.get("name", _MISSING)
    if not isinstance(name, str):
        shown = "missing" if name is _MISSING else _json_type(name)
        raise RequestError(f"{where}.name", f"must be a string. Got {shown}")
    term = item.get("term")
    if term is not None and not isinstance(term, str):
        raise RequestError(f"{where}.term", f"must be a string or null. Got {_json_type(term)}")
    value = item.get("value", _MISSING)
    if value is _MISSING:
        raise RequestError(f"{where}.value", "missing")
    return name + BAG_SEP + (term or ""), _float(value, f"{where}.value")

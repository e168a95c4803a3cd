"""Building blocks of the configuration schema, shared by every coordinate type."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_L2",
    "TOKEN_PATTERN",
    "CoordinateBase",
    "FeatureConfig",
    "HashedFeatureConfig",
    "L2Value",
    "StrictModel",
    "TextFeatureConfig",
    "sorted_grid",
    "validate_penalty",
]


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and validates assignments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


#: Default token pattern of ``features.text``: runs of two or more word characters.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


class TextFeatureConfig(StrictModel):
    """One text column turned into word and word n-gram features (``features.text``).

    The vocabulary (and, with ``tfidf``, the inverse document frequencies) is built on
    the training data and saved with the model; words not in it are ignored at scoring.

    Attributes
    ----------
    column : str
        The text column (null is the empty text).
    ngram_range : (int, int)
        Smallest and largest number of consecutive words in a term.
    lowercase : bool
        Lower-case the text before tokenising.
    token_pattern : str
        Regular expression of a token (at most one capturing group, which is then the
        token). Default: two or more word characters, as scikit-learn's.
    min_df, max_df : int or float
        Keep terms found in at least ``min_df`` and at most ``max_df`` training texts
        (an integer is a number of texts, a float in ``[0, 1]`` a share of them).
    max_features : int or None
        Keep only this many terms, those with the most occurrences in the training texts
        (ties: alphabetical order).
    tfidf : bool
        Values are TF-IDF (smooth idf ``ln((1 + n) / (1 + df)) + 1``, rows scaled to unit
        L2 norm) or, when False, raw term counts.
    sublinear_tf : bool
        With ``tfidf``: a count ``c`` becomes ``1 + ln(c)``.
    """

    column: str = Field(min_length=1)
    ngram_range: tuple[int, int] = (1, 1)
    lowercase: bool = True
    token_pattern: str = TOKEN_PATTERN
    min_df: Annotated[int, Field(ge=1)] | Annotated[float, Field(ge=0.0, le=1.0)] = 1
    max_df: Annotated[int, Field(ge=1)] | Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    max_features: Annotated[int, Field(ge=1)] | None = None
    tfidf: bool = True
    sublinear_tf: bool = False

    @field_validator("ngram_range")
    @classmethod
    def _check_ngrams(cls, value: tuple[int, int]) -> tuple[int, int]:
        lo, hi = value
        if lo < 1 or hi < lo:
            raise ValueError(f"must be [min_n, max_n] with 1 <= min_n <= max_n. Got {list(value)}")
        return value

    @field_validator("token_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            groups = re.compile(value).groups
        except re.error as err:
            raise ValueError(f"is not a regular expression ({err}). Got {value!r}") from None
        if groups > 1:
            raise ValueError(f"may have at most one capturing group. Got {value!r}")
        return value


class HashedFeatureConfig(StrictModel):
    """Categorical columns hashed into a fixed number of columns (``features.hashed``).

    The value ``v`` of column ``c`` is the string ``"c=v"`` (categorical levels as text,
    ``3.0`` written ``3``; nulls give no feature), hashed with 32-bit MurmurHash3 (seed 0,
    UTF-8 bytes) ``h``; it adds 1 (with ``signed``: the sign of ``h``) to column
    ``|h| mod n_buckets`` of the block. This is scikit-learn's ``FeatureHasher`` on
    ``{c: v}`` dictionaries. No vocabulary: unseen values hash like any other.

    Attributes
    ----------
    columns : list of str
        The columns of the block (a single name is a one-column block); columns listed
        together share its ``n_buckets`` columns.
    n_buckets : int
        Columns of the block.
    signed : bool
        Values +-1 by the hash's sign, so that collisions cancel on average.
    """

    columns: list[str] = Field(min_length=1)
    n_buckets: int = Field(ge=1, le=2**31 - 1)
    signed: bool = False

    @field_validator("columns", mode="before")
    @classmethod
    def _one_column(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FeatureConfig(StrictModel):
    """The features of one coordinate (its "feature shard").

    Attributes
    ----------
    numeric : list of str
        Numeric columns, used as they are.
    categorical : list of str
        Categorical columns, one-hot encoded through an index map built from the
        training data; values not seen in training are ignored at scoring time.
    bags : list of str
        Name-term-value feature bags: columns of type ``list<struct<name, term, value>>``.
        Each distinct ``(name, term)`` pair seen in training becomes one feature.
    text : list of TextFeatureConfig
        Text columns as word n-gram counts or TF-IDF (a column name alone takes the
        defaults). Fixed and random coordinates only.
    hashed : list of HashedFeatureConfig
        Blocks of hashed categorical columns. Fixed and random coordinates only.
    """

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    bags: list[str] = Field(default_factory=list)
    text: list[TextFeatureConfig] = Field(default_factory=list)
    hashed: list[HashedFeatureConfig] = Field(default_factory=list)

    @field_validator("text", mode="before")
    @classmethod
    def _text_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"column": v} if isinstance(v, str) else v for v in value]
        return value

    def columns(self) -> list[str]:
        """Return every column the shard reads."""
        return [
            *self.numeric,
            *self.categorical,
            *self.bags,
            *(t.column for t in self.text),
            *(c for h in self.hashed for c in h.columns),
        ]


#: Largest penalty accepted: beyond it every coefficient is 0 to machine precision, so a
#: larger value is a typo (or ``.inf``).
MAX_L2 = 1e12

L2Value = Annotated[float, Field(ge=0.0, le=MAX_L2, allow_inf_nan=False)]


def validate_penalty(value: Any) -> Any:
    """Reject an empty list, booleans, and negative, non-finite or absurd values with a
    message naming the value."""
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise ValueError("must be a number or a non-empty list of numbers")
    for v in values:
        if isinstance(v, bool):
            raise ValueError(f"must be a number. Got {v} instead")
        if isinstance(v, int | float):
            if math.isnan(v) or math.isinf(v):
                raise ValueError(f"must be a finite number. Got {v} instead")
            if v < 0:
                raise ValueError(f"must be >= 0. Got {v} instead")
            if v > MAX_L2:
                raise ValueError(f"must be <= {MAX_L2:g}. Got {v} instead")
    return value


class CoordinateBase(StrictModel):
    """Settings every coordinate has: name, features, l2 (or a grid), intercept, locking."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    l2: L2Value | list[L2Value] = 1.0
    intercept: bool = True
    locked: bool = False
    init_model: str | None = None
    #: The model's task: set from the top-level ``task`` of the config, not by hand.
    task: Literal["logistic", "linear", "poisson"] = "logistic"

    @field_validator("l2", mode="before")
    @classmethod
    def _check_l2(cls, value: Any) -> Any:
        return validate_penalty(value)

    @model_validator(mode="after")
    def _check_locked(self) -> CoordinateBase:
        if self.locked and self.init_model is None:
            raise ValueError(
                f"coordinate '{self.name}' is locked, so it needs 'init_model': the model "
                "directory to load it from"
            )
        return self

    @model_validator(mode="after")
    def _check_raw_features(self) -> CoordinateBase:
        kind = getattr(self, "type", None)
        if (self.features.text or self.features.hashed) and kind not in (None, "fixed", "random"):
            raise ValueError(
                f"coordinate '{self.name}' is a {kind} coordinate: 'features.text' and "
                "'features.hashed' feed linear coordinates (fixed, random) only"
            )
        return self

    def search_grid(self) -> list[dict[str, float | None]]:
        """Candidate hyper-parameters, strongest penalty first (the warm-start path order)."""
        return [{"l2": v} for v in sorted_grid(self.l2)]


def sorted_grid(value: float | list[float]) -> list[float]:
    """Distinct values of a number-or-list setting, largest first."""
    values = value if isinstance(value, list) else [value]
    return sorted({float(v) for v in values}, reverse=True)

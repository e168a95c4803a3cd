"""Building blocks of the configuration schema, shared by every coordinate type."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_L2",
    "CoordinateBase",
    "FeatureConfig",
    "L2Value",
    "StrictModel",
    "sorted_grid",
    "validate_penalty",
]


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and validates assignments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    """

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    bags: list[str] = Field(default_factory=list)

    def columns(self) -> list[str]:
        """Return every column the shard reads."""
        return [*self.numeric, *self.categorical, *self.bags]


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

    def search_grid(self) -> list[dict[str, float | None]]:
        """Candidate hyper-parameters, strongest penalty first (the warm-start path order)."""
        return [{"l2": v} for v in sorted_grid(self.l2)]


def sorted_grid(value: float | list[float]) -> list[float]:
    """Distinct values of a number-or-list setting, largest first."""
    values = value if isinstance(value, list) else [value]
    return sorted({float(v) for v in values}, reverse=True)

"""Column roles of a table: label, weight, offset and uid, checked once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gdmix.config import DataConfig
from gdmix.data.schema import (
    check_finite_numeric,
    check_label,
    check_not_empty,
    require_columns,
)
from gdmix.errors import DataError

__all__ = ["RoleColumns", "extract_roles"]


@dataclass
class RoleColumns:
    """The role columns of one table, as float64 arrays (``y`` is None when unlabelled)."""

    y: np.ndarray | None
    weight: np.ndarray
    offset: np.ndarray
    uid: pd.Series | None


def extract_roles(
    frame: pd.DataFrame, data: DataConfig, where: str, *, need_label: bool
) -> RoleColumns:
    """Check and extract the role columns named by ``data`` from ``frame``.

    Parameters
    ----------
    frame : DataFrame
        The table.
    data : DataConfig
        Which columns are label, weight, offset and uid.
    where : str
        Name of the table, used in error messages ("training data"...).
    need_label : bool
        Whether the label column is required (training, evaluation) or optional (scoring).

    Raises
    ------
    DataError
        Empty table, missing column, non-binary label, NaN/inf or negative weight, NaN/inf
        offset.
    """
    check_not_empty(frame, where)
    n = len(frame)
    y = None
    if need_label or data.label in frame.columns:
        require_columns(frame, [data.label], where)
        y = check_label(frame, data.label, where)
    weight = np.ones(n)
    if data.weight is not None:
        require_columns(frame, [data.weight], where)
        weight = check_finite_numeric(frame, data.weight, where)
        if (weight < 0).any():
            raise DataError(f"{where}: weight column '{data.weight}' has negative values")
    offset = np.zeros(n)
    if data.offset is not None:
        require_columns(frame, [data.offset], where)
        offset = check_finite_numeric(frame, data.offset, where)
    uid = None
    if data.uid is not None:
        require_columns(frame, [data.uid], where)
        uid = frame[data.uid]
    return RoleColumns(y, weight, offset, uid)

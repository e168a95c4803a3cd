"""Column roles of a table: label, weight, offset and uid, checked once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gdmix.array_kernels import filled
from gdmix.config import DataConfig
from gdmix.data.schema import (
    check_finite_numeric,
    check_label,
    check_not_empty,
    require_columns,
)
from gdmix.errors import DataError

__all__ = ["MAX_ABS_OFFSET", "RoleColumns", "extract_roles"]

#: Largest offset accepted. An offset is a logit: beyond 100 the probability is 0 or 1
#: to more digits than float64 holds, so larger values are a unit or column mistake.
MAX_ABS_OFFSET = 100.0


@dataclass
class RoleColumns:
    """The role columns of one table, as float64 arrays (``y`` is None when unlabelled)."""

    y: np.ndarray | None
    weight: np.ndarray
    offset: np.ndarray
    uid: pd.Series | None
    #: Whether ``offset`` is all zeros because the table has no offset column.
    no_offset: bool = False


def extract_roles(
    frame: pd.DataFrame,
    data: DataConfig,
    where: str,
    *,
    need_label: bool,
    need_weight: bool = True,
    need_uid: bool = True,
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
    need_weight, need_uid : bool
        Whether a configured weight / uid column must be present (training); when not,
        a missing weight column means weight 1 and a missing uid column no uid.

    Raises
    ------
    DataError
        Empty table, missing column, a label that does not fit the task (not 0/1 for
        logistic, negative for Poisson), NaN/inf or negative weight, NaN/inf or absurd
        (beyond +-100) offset.
    """
    check_not_empty(frame, where)
    n = len(frame)
    y = None
    if need_label or data.label in frame.columns:
        require_columns(frame, [data.label], where)
        y = check_label(frame, data.label, where, data.task)
    if data.weight is not None and (need_weight or data.weight in frame.columns):
        require_columns(frame, [data.weight], where)
        weight = check_finite_numeric(frame, data.weight, where)
        if (weight < 0).any():
            raise DataError(f"{where}: weight column '{data.weight}' has negative values")
    else:
        weight = filled(n, 1.0)
    offset = np.zeros(n)
    if data.offset is not None:
        require_columns(frame, [data.offset], where)
        offset = check_finite_numeric(frame, data.offset, where)
        big = np.abs(offset) > MAX_ABS_OFFSET
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise DataError(
                f"{where}: offset column '{data.offset}' holds {offset[i]:g} at row {i}; an "
                f"offset is a logit and must lie within +-{MAX_ABS_OFFSET:g}"
            )
    uid = None
    if data.uid is not None and (need_uid or data.uid in frame.columns):
        require_columns(frame, [data.uid], where)
        uid = frame[data.uid]
    return RoleColumns(y, weight, offset, uid, no_offset=data.offset is None)

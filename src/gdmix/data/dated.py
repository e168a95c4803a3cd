"""Date-partitioned data folders: ``ROOT/daily/yyyy/MM/dd/``, selected by a date range.

Photon-ML and GAME jobs keep one folder of files per day under ``ROOT/daily`` and read
the days of a range. In gdmix a selection of days is a path of its own:

    ROOT/daily/2026/11/01..2026/11/07

(both days included), which :func:`gdmix.data.io.read_table` reads as the rows of every
day folder of the range that exists, oldest day first, files in name order. Such a path
can be given anywhere a table path is (``gdmix score --data``, ``model.score``...); in a
config, ``data.date_range`` (calendar days) or ``data.days_ago`` (days before today)
turn ``data.train`` into it (``validation_date_range`` / ``validation_days_ago`` do the
same for ``data.validation``), see :class:`gdmix.config.DataConfig`.

Days of the range without a folder are skipped (and logged); a range without any day
folder is an error naming the root and the range.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from pathlib import Path

from pydantic import Field, model_validator

from gdmix.config_base import StrictModel
from gdmix.errors import DataError

__all__ = [
    "DAILY",
    "DateRange",
    "DaysAgo",
    "dated_path",
    "day_folders",
    "parse_dated_path",
    "select_days",
]

logger = logging.getLogger("gdmix")

#: Folder under a data root that holds the ``yyyy/MM/dd`` day folders.
DAILY = "daily"
_DAY = r"(\d{4})/(\d{2})/(\d{2})"
_DATED = re.compile(rf"^(?:(?P<root>.*)[/\\])?{DAILY}[/\\]{_DAY}\.\.{_DAY}$")
#: Longest range accepted (about 50 years): a typo in a year is caught, not listed.
MAX_DAYS = 20_000


class DateRange(StrictModel):
    """Calendar days, both included: ``{start: 2026-11-01, end: 2026-11-07}``.

    Attributes
    ----------
    start, end : date
        First and last day (ISO dates, ``yyyy-mm-dd``); ``start <= end``.
    """

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _check_order(self) -> DateRange:
        if self.start > self.end:
            raise ValueError(
                f"'start' must be on or before 'end'. Got start {self.start}, end {self.end}"
            )
        if (self.end - self.start).days >= MAX_DAYS:
            raise ValueError(f"the range spans more than {MAX_DAYS} days: check the years")
        return self

    def days(self) -> tuple[dt.date, dt.date]:
        """``(start, end)``."""
        return self.start, self.end


class DaysAgo(StrictModel):
    """Days counted back from today, both included: ``{start: 7, end: 1}`` is the week
    that ended yesterday (``0`` is today).

    Attributes
    ----------
    start, end : int
        Days before today of the first and the last day; ``start >= end >= 0``.
    """

    start: int = Field(ge=0, lt=MAX_DAYS)
    end: int = Field(ge=0, lt=MAX_DAYS)

    @model_validator(mode="after")
    def _check_order(self) -> DaysAgo:
        if self.start < self.end:
            raise ValueError(
                "'start' counts days back to the first day and must be >= 'end' (the last "
                f"day). Got start {self.start}, end {self.end}"
            )
        return self

    def days(self, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
        """``(first day, last day)`` counted back from ``today`` (default: the local date)."""
        today = today or dt.date.today()
        return today - dt.timedelta(days=self.start), today - dt.timedelta(days=self.end)


def dated_path(root: str | os.PathLike[str], start: dt.date, end: dt.date) -> str:
    """The path that selects the days ``start..end`` under ``root``:
    ``ROOT/daily/yyyy/MM/dd..yyyy/MM/dd``."""
    base = str(root).rstrip("/\\")
    prefix = f"{base}/" if base else ""
    return f"{prefix}{DAILY}/{start:%Y/%m/%d}..{end:%Y/%m/%d}"


def parse_dated_path(source: object) -> tuple[Path, dt.date, dt.date] | None:
    """``(root, start, end)`` of a day-range path, None for any other source.

    Raises
    ------
    DataError
        When the path has the form of a range but names no real day, or ends before it
        starts.
    """
    if not isinstance(source, str | os.PathLike):
        return None
    text = os.fspath(source)
    match = _DATED.match(text)
    if match is None:
        return None
    parts = [int(x) for x in match.groups()[1:]]
    try:
        start = dt.date(*parts[:3])
        end = dt.date(*parts[3:])
    except ValueError as err:
        raise DataError(f"{text}: not a range of real days ({err})") from None
    if start > end:
        raise DataError(f"{text}: the range ends ({end}) before it starts ({start})")
    if (end - start).days >= MAX_DAYS:
        raise DataError(f"{text}: the range spans more than {MAX_DAYS} days")
    root = match.group("root")
    return Path(root if root else "."), start, end


def day_folders(
    root: str | os.PathLike[str], start: dt.date, end: dt.date
) -> tuple[list[Path], list[dt.date]]:
    """The day folders ``root/daily/yyyy/MM/dd`` of ``start..end`` that exist (oldest
    first), and the days that have none."""
    found: list[Path] = []
    missing: list[dt.date] = []
    day = start
    while day <= end:
        folder = Path(root) / DAILY / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
        if folder.is_dir():
            found.append(folder)
        else:
            missing.append(day)
        day += dt.timedelta(days=1)
    return found, missing


def select_days(source: str | os.PathLike[str]) -> list[Path]:
    """The day folders a day-range path selects.

    Raises
    ------
    DataError
        When ``source`` is not a day-range path, its root does not exist, or no day of
        the range has a folder.
    """
    parsed = parse_dated_path(source)
    if parsed is None:
        raise DataError(f"{source}: not a day range (ROOT/{DAILY}/yyyy/MM/dd..yyyy/MM/dd)")
    root, start, end = parsed
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"{source}: the data root {root} {what} (it holds {DAILY}/yyyy/MM/dd)")
    found, missing = day_folders(root, start, end)
    if not found:
        raise DataError(
            f"{source}: no day folder {root}/{DAILY}/yyyy/MM/dd exists from {start} to {end}"
        )
    if missing:
        shown = ", ".join(str(d) for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        logger.info(
            "%s: %d of %d days have no folder (%s); reading the others",
            source, len(missing), len(found) + len(missing), shown,
        )  # fmt: skip
    return found

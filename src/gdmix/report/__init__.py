"""A self-contained HTML report of a model (and, optionally, of its scores on a table).

``gdmix report --model DIR [--data TEST] --output report.html`` and
:func:`write_report`: one HTML file, every figure embedded as a PNG (nothing fetched
when it is opened), drawn with matplotlib. See :func:`build_report` for the sections.
"""

from gdmix.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]

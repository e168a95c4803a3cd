"""``gdmix report``: a self-contained HTML report of a model, with plots."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "report"
HELP = "write an HTML report of a model (plots embedded)"
DESCRIPTION = """\
Write one self-contained HTML file (figures embedded, nothing fetched when it is opened):
the model's summary, training history and l2 search curves, the fixed effect's largest
coefficients, per random effect the distributions of rows per entity, intercepts and
coefficients and their shrinkage; with --data (a labelled table), AUC and log loss, a
calibration plot, accuracy against rows per entity, and permutation importance of deep
and GBDT fixed effects. Tables of more than 200,000 rows are sampled (stated)."""

logger = logging.getLogger("gdmix")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix report``."""
    parser.add_argument("--model", required=True, type=Path, help="model directory or store")
    parser.add_argument("--data", type=Path, help="labelled Parquet or CSV table (e.g. test)")
    parser.add_argument("--output", required=True, type=Path, help="the .html file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--trust-custom-code", action="store_true",
                        help="allow the model to import the custom module it names")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Write the report."""
    from gdmix.model import GDMixModel
    from gdmix.report import write_report

    model = GDMixModel.load(args.model, trust_custom_code=args.trust_custom_code)
    path = write_report(model, args.output, args.data, overwrite=args.overwrite)
    logger.info("report written to %s", path)
    return 0

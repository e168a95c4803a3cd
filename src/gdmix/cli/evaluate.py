"""``gdmix evaluate``: AUC, log loss, per-entity AUC and entity coverage of a saved model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "evaluate"
HELP = "AUC, log loss and per-entity AUC of a saved model"
DESCRIPTION = """\
Evaluate a saved model on a labelled table; prints JSON: AUC, log loss, the AUC after
each coordinate, per-entity AUC for every --group-by column, and for every random effect
the share of rows whose entity the model knows (coverage@<coordinate>)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix evaluate``."""
    parser.add_argument("--model", required=True, type=Path, help="model directory")
    parser.add_argument("--data", required=True, type=Path, help="Parquet or CSV table")
    parser.add_argument(
        "--group-by", nargs="*", default=[], metavar="COL", help="per-entity AUC columns"
    )
    parser.add_argument(
        "--trust-custom-code",
        action="store_true",
        help="allow the model to import the custom PyTorch module its manifest names",
    )


def run(args: argparse.Namespace) -> int:
    """Print the metrics as JSON."""
    from gdmix.model import GDMixModel

    model = GDMixModel.load(args.model, trust_custom_code=args.trust_custom_code)
    print(json.dumps(model.evaluate(args.data, group_by=args.group_by), indent=2))
    return 0

"""``gdmix evaluate``: a saved model's metrics (by task), per entity, and entity coverage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "evaluate"
HELP = "metrics of a saved model (AUC, log loss, AUPR; RMSE; Poisson deviance)"
DESCRIPTION = """\
Evaluate a saved model on a labelled table; prints JSON. Logistic models: AUC, log loss,
AUPR and RMSE of the probabilities, the AUC after each coordinate, and per --group-by
column the per-entity AUC and precision@k. Linear models: RMSE (and after each
coordinate); Poisson models: mean Poisson deviance and RMSE. For every random effect,
the share of rows whose entity the model knows (coverage@<coordinate>)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix evaluate``."""
    parser.add_argument("--model", required=True, type=Path, help="model directory")
    parser.add_argument("--data", required=True, type=Path, help="Parquet or CSV table")
    parser.add_argument(
        "--group-by",
        nargs="*",
        default=[],
        metavar="COL",
        help="per-entity AUC and precision@k columns (logistic models)",
    )
    parser.add_argument("--k", type=int, default=10, help="the k of precision@k (default 10)")
    parser.add_argument(
        "--trust-custom-code",
        action="store_true",
        help="allow the model to import the custom PyTorch module its manifest names",
    )


def run(args: argparse.Namespace) -> int:
    """Print the metrics as JSON."""
    from gdmix.model import GDMixModel

    model = GDMixModel.load(args.model, trust_custom_code=args.trust_custom_code)
    print(json.dumps(model.evaluate(args.data, group_by=args.group_by, k=args.k), indent=2))
    return 0

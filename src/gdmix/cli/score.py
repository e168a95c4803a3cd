"""``gdmix score``: per-coordinate and total scores of a table with a saved model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "score"
HELP = "score a table with a saved model"
DESCRIPTION = """\
Write one row per input row: the uid column (when the model has one and the data holds
it), each coordinate's score, the offset, 'total' (the logit), and with
--output-probabilities 'probability' (sigmoid of the total). Entities unseen in
training contribute 0. Only the columns the model's coordinates read (and the offset)
are needed: no label, weight or uid.

The output's extension picks its format (.parquet or .csv). An existing file is kept
unless --overwrite is given; the input table and files inside a model folder are never
overwritten."""

logger = logging.getLogger("gdmix")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix score``."""
    parser.add_argument("--model", required=True, type=Path, help="model directory")
    parser.add_argument("--data", required=True, type=Path, help="Parquet or CSV table")
    parser.add_argument("--output", required=True, type=Path, help="output .parquet or .csv")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--output-probabilities",
        action="store_true",
        help="also write 'probability' = sigmoid(total) for every row ('mean' for linear\n"
        "and Poisson models: the total, or exp(total))",
    )
    parser.add_argument(
        "--trust-custom-code",
        action="store_true",
        help="allow the model to import the custom PyTorch module its manifest names",
    )


def run(args: argparse.Namespace) -> int:
    """Score the table and write the scores."""
    from gdmix.data.io import check_output_file, write_table
    from gdmix.model import GDMixModel

    check_output_file(args.output, overwrite=args.overwrite, inputs=[args.data, args.model])
    model = GDMixModel.load(args.model, trust_custom_code=args.trust_custom_code)
    scores = model.score(args.data)
    if args.output_probabilities:
        from gdmix.losses import inverse_link

        # the mean of the task: a probability, the total itself, or a Poisson rate
        column = "probability" if model.task == "logistic" else "mean"
        scores[column] = inverse_link(model.task, scores["total"].to_numpy())
    write_table(scores, args.output, overwrite=args.overwrite)
    logger.info("wrote %d rows to %s", len(scores), args.output)
    return 0

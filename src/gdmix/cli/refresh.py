"""``gdmix refresh``: the next version of a model from the current one and new data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "refresh"
HELP = "retrain the random effects on new data, the rest frozen; publish a version"
DESCRIPTION = """\
Retrain a model's random effects on new data with its other coordinates frozen (their
files hard-linked, not retrained), keeping entities absent from the new data. Everything
comes from the previous model's manifest: no config to repeat.

  gdmix refresh --model STORE --data new.parquet --validation val.parquet
      publishes the next version of the store and promotes it to 'current'
  gdmix refresh --model OLD_DIR --data new.parquet --output NEW_DIR
      writes a plain model folder

Modes: partial (refit from zero on the new data), warm (the same, started from the old
coefficients), incremental (the old model is each entity's prior: the new data updates
it; needs a model trained with 'variance').

With --max-regression and validation data, a model whose validation metric is worse than
its parent's by more than the threshold is left in the store unpromoted, and the command
exits with status 3. Bad input exits with status 2."""

#: Exit status when the guard refuses to promote the refreshed model.
EXIT_REFUSED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix refresh``."""
    parser.add_argument("--model", required=True, type=Path,
                        help="the previous model: a model folder or a store")  # fmt: skip
    parser.add_argument("--data", required=True, type=Path, help="new training data")
    parser.add_argument("--validation", type=Path, help="validation data (guard, metrics)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--output", type=Path, help="write the new model to this folder")
    where.add_argument("--store", type=Path,
                       help="publish here (default: --model when it is a store)")  # fmt: skip
    parser.add_argument("--mode", choices=["partial", "warm", "incremental"], default="partial")
    parser.add_argument("--coordinates", metavar="A,B",
                        help="random effects to retrain (default: all of them)")  # fmt: skip
    parser.add_argument("--n-passes", type=int, default=1, help="passes (default 1)")
    parser.add_argument("--expire-after", type=int, metavar="N",
                        help="drop entities without rows in the last N refreshes")  # fmt: skip
    parser.add_argument("--max-regression", type=float, metavar="X",
                        help="refuse to promote if this much worse than the parent")  # fmt: skip
    parser.add_argument("--metric", choices=["auc", "log_loss"], default="auc")
    parser.add_argument("--timestamp-column", metavar="COL",
                        help="record the new data's time range from this column")  # fmt: skip
    parser.add_argument("--engine", choices=["local", "dask"], default="local")
    parser.add_argument("--n-threads", type=int, help="threads for per-entity solves")
    parser.add_argument("--overwrite", action="store_true", help="replace --output's contents")
    parser.add_argument("--trust-custom-code", action="store_true",
                        help="allow the model to import the custom module it names")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Refresh, save or publish, print the lineage (JSON)."""
    from gdmix.refresh import refresh

    names = (
        [n.strip() for n in args.coordinates.split(",") if n.strip()] if args.coordinates else None
    )
    result = refresh(
        args.model,
        args.data,
        validation=args.validation,
        output=args.output,
        store=args.store,
        mode=args.mode,
        coordinates=names,
        n_passes=args.n_passes,
        expire_after=args.expire_after,
        max_regression=args.max_regression,
        metric=args.metric,
        timestamp_column=args.timestamp_column,
        engine=args.engine,
        n_threads=args.n_threads,
        progress=not args.quiet,
        overwrite=args.overwrite,
        trust_custom_code=args.trust_custom_code,
    )
    report = {"model": str(result.path), "version": result.version,
              "promoted": result.promoted, **result.lineage}  # fmt: skip
    print(json.dumps(report, indent=2, default=str))
    return EXIT_REFUSED if result.refused else 0

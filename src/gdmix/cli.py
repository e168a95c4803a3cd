"""The ``gdmix`` command line: train, score, evaluate, data.

Every error caused by bad input is reported in one line on standard error with
exit status 2; nothing is half-written (models and score files are written under a
temporary name and renamed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from gdmix._version import __version__
from gdmix.errors import ConfigError, GDMixError

__all__ = ["main"]

logger = logging.getLogger("gdmix")

_DESCRIPTION = """\
gdmix trains generalized deep mixed models: logit = offset + f(x) + sum_i r_i(x_i),
a global fixed effect plus per-entity random effects, by block coordinate descent.

  gdmix data movielens-100k --output data/ml100k   write the example's Parquet files
  gdmix train --config examples/movielens_100k.yaml train, save, report test metrics
  gdmix score --model DIR --data FILE --output F    per-coordinate and total scores
  gdmix evaluate --model DIR --data FILE           AUC, log loss, per-entity AUC

Bad input (missing column, bad labels, NaN, unknown config key...) exits with status 2.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdmix", description=_DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"gdmix {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model by block coordinate descent and save it. The config "
        "(YAML) names the data files, the column roles, the coordinates in update order "
        "and the training settings; unknown keys are rejected. See docs/config.md.",
    )
    train.add_argument("--config", required=True, type=Path, help="YAML config file")
    train.add_argument("--output", type=Path, help="model directory (overrides 'output')")
    train.add_argument("--n-threads", type=int, help="threads for per-entity solves")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    train.add_argument(
        "--engine", choices=["local", "dask"], help="where to train (overrides training.engine)"
    )
    train.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="dask scheduler address, e.g. tcp://10.0.0.1:8786 (default: a LocalCluster)",
    )
    train.add_argument("--n-workers", type=int, help="workers of the LocalCluster (dask)")
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="processes on this machine for data-parallel training of the deep coordinates\n"
        "(torch.distributed; default 1). See docs/deep.md for several machines",
    )

    score = sub.add_parser(
        "score",
        help="score a table with a saved model",
        description="Write one row per input row: the uid column (if the model has one), "
        "each coordinate's score, the offset, and 'total' (the logit). Entities unseen in "
        "training contribute 0.",
    )
    score.add_argument("--model", required=True, type=Path, help="model directory")
    score.add_argument("--data", required=True, type=Path, help="Parquet or CSV table")
    score.add_argument("--output", required=True, type=Path, help="output .parquet or .csv")

    evaluate = sub.add_parser(
        "evaluate",
        help="AUC, log loss and per-entity AUC of a saved model",
        description="Evaluate a saved model on a labelled table; prints JSON.",
    )
    evaluate.add_argument("--model", required=True, type=Path, help="model directory")
    evaluate.add_argument("--data", required=True, type=Path, help="Parquet or CSV table")
    evaluate.add_argument(
        "--group-by", nargs="*", default=[], metavar="COL", help="per-entity AUC columns"
    )

    data = sub.add_parser("data", help="example data sets")
    data_sub = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    ml = data_sub.add_parser(
        "movielens-100k",
        help="MovieLens-100K: find or download, split 72/8/20, write Parquet",
        description="Find the GroupLens ml-100k files (--data-dir, $GDMIX_DATA_DIR, or the "
        "cache $GDMIX_CACHE_DIR / ~/.cache/gdmix), downloading them when missing (sha256 "
        "checked), then write train/validation/test Parquet files with the example's "
        "features. Label = rating > 3; random split by row.",
    )
    ml.add_argument("--output", required=True, type=Path, help="folder for the Parquet files")
    ml.add_argument("--data-dir", type=Path, help="folder holding ml-100k (or ml-100k itself)")
    ml.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    ml.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    return parser


def _cmd_train_distributed(args: argparse.Namespace) -> int:
    """``gdmix train --nproc N`` (N > 1): N local processes, see gdmix.deep.distributed."""
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1. Got {args.nproc} instead")
    if args.engine == "dask" or args.scheduler is not None or args.n_workers is not None:
        raise ConfigError(
            "--nproc trains with torch.distributed on this machine; it does not combine with "
            "the dask engine (--engine dask, --scheduler, --n-workers)"
        )
    from gdmix.deep.distributed import DistributedError, launch

    extra = ["--n-threads", str(args.n_threads)] if args.n_threads is not None else []
    if args.engine is not None:
        extra += ["--engine", args.engine]
    if args.no_progress or args.quiet:
        extra.append("--no-progress")
    if args.quiet:
        extra.append("--quiet")
    try:
        report = launch(args.config, args.output, args.nproc, extra)
    except DistributedError as err:
        print(f"gdmix train: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, default=str))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from gdmix.config import load_config, model_output, with_overrides
    from gdmix.training import fit, log_callback

    if args.nproc != 1:
        return _cmd_train_distributed(args)
    config = with_overrides(
        load_config(args.config),
        training={
            "n_threads": args.n_threads,
            "engine": args.engine,
            "progress": False if args.no_progress or args.quiet else None,
        },
        dask={"scheduler": args.scheduler, "n_workers": args.n_workers},
    )
    output = model_output(config, args.output)
    model = fit(config, callbacks=[log_callback])
    if config.data.test is not None:
        model.metrics["test"] = model.evaluate(config.data.test, where="test data")
    model.save(output)
    logger.info("model saved to %s", output)
    print(json.dumps({"model": str(output), **model.metrics}, indent=2, default=str))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from gdmix.data.io import write_table
    from gdmix.model import GDMixModel

    model = GDMixModel.load(args.model)
    scores = model.score(args.data)
    write_table(scores, args.output)
    logger.info("wrote %d rows to %s", len(scores), args.output)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from gdmix.model import GDMixModel

    model = GDMixModel.load(args.model)
    print(json.dumps(model.evaluate(args.data, group_by=args.group_by), indent=2))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from gdmix.data.movielens import write_movielens_parquet

    paths = write_movielens_parquet(
        args.output, data_dir=args.data_dir, seed=args.seed, download=not args.no_download
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


_COMMANDS = {"train": _cmd_train, "score": _cmd_score, "evaluate": _cmd_evaluate, "data": _cmd_data}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return _COMMANDS[args.command](args)
    except GDMixError as err:
        print(f"gdmix {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gdmix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

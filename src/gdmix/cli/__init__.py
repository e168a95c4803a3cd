"""The ``gdmix`` command line: one small module per command over the Python API.

Every error caused by bad input (data, configuration, files, disk) is reported in one
line on standard error with exit status 2; nothing is half-written (models and score
files are written under a temporary name and renamed).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from gdmix._version import __version__
from gdmix.cli import (
    data,
    evaluate,
    export_photon,
    import_photon,
    inspect,
    models,
    refresh,
    report,
    score,
    serve,
    train,
)
from gdmix.errors import GDMixError

__all__ = ["command_process", "entry", "main"]

logger = logging.getLogger("gdmix")

#: Command modules, in the order ``gdmix --help`` lists them. Each has ``NAME``, ``HELP``,
#: ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: list[ModuleType] = [
    train, refresh, models, score, serve, evaluate, inspect, report, data, export_photon,
    import_photon,
]  # fmt: skip

_DESCRIPTION = """\
gdmix trains generalized deep mixed models: logit = offset + f(x) + sum_i r_i(x_i),
a global fixed effect plus per-entity random effects, by block coordinate descent.

  gdmix data movielens-100k --output data/ml100k   write the example's Parquet files
  gdmix train --config examples/movielens_100k.yaml train, save, report test metrics
  gdmix score --model DIR --data FILE --output F    per-coordinate and total scores
  gdmix evaluate --model DIR --data FILE           AUC, log loss, per-entity AUC
  gdmix refresh --model STORE --data NEW           retrain the random effects, publish
  gdmix models list --store STORE                  the versions of a model store
  gdmix inspect DIR                                one screen about a model
  gdmix report --model DIR --output report.html    HTML report with plots
  gdmix export-photon DIR OUT                      linear effects as Photon Avro models
  gdmix import-photon OUT --output DIR             Photon Avro models as a gdmix model

Bad input (missing column, bad labels, NaN, unknown config key, unusable output path,
full disk...) is reported in one line with exit status 2.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="gdmix", description=_DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"gdmix {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        command = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawTextHelpFormatter,
        )
        command.set_defaults(handler=module.run)
        module.add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    return _main(build_parser().parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    saved = (logger.handlers, logger.propagate, logger.level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return _run(args)
    finally:  # leave the caller's logging as it was (main may run inside a program)
        logger.handlers, logger.propagate, logger.level = saved


def entry() -> None:
    """The ``gdmix`` command: :func:`main` with the process settings of a command (see
    :func:`command_process`), exiting with its status."""
    args = build_parser().parse_args()
    command_process(args.command)
    sys.exit(_main(args))


def command_process(command: str) -> None:
    """Settings of a ``gdmix`` process, made once before the command runs.

    - The objects made by the imports (about 115,000: numba, pandas, pydantic...) live
      as long as the process, so they are moved out of the garbage collector's reach
      (``gc.freeze``): its full collections during a job, and the ones at interpreter
      exit, then walk only what the command made (a 1M-entity ``train``: exit 0.33 ->
      0.20 s).
    - numpy's huge-page advice is dropped where it stalls (:mod:`gdmix.hugepages`).
    - Every command but the long-lived ``serve`` keeps freed memory for reuse
      (:mod:`gdmix.malloc_reuse`).

    Parameters
    ----------
    command : str
        The command's name (``train``, ``serve``...).
    """
    from gdmix.hugepages import avoid_compaction_stalls
    from gdmix.malloc_reuse import reuse_freed_memory

    gc.freeze()
    avoid_compaction_stalls()
    if command != serve.NAME:
        reuse_freed_memory()


def _run(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except GDMixError as err:
        print(f"gdmix {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # I/O the API did not wrap (a last resort: still one line)
        where = f"{err.filename}: " if err.filename else ""
        print(f"gdmix {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gdmix: interrupted", file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    """The message on one line (several problems are joined with '; ')."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())


if __name__ == "__main__":
    entry()

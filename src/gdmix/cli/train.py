"""``gdmix train``: train a model from a YAML config and save it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gdmix.errors import ConfigError

if TYPE_CHECKING:
    from gdmix.config import GDMixConfig

NAME = "train"
HELP = "train a model from a YAML config"
DESCRIPTION = """\
Train a model by block coordinate descent and save it. The config (YAML) names the data
files, the column roles, the coordinates in update order and the training settings;
unknown keys are rejected. See docs/config.md.

The model directory is checked before training starts: it must be new, empty, or hold a
gdmix model and nothing else (--overwrite also replaces a model folder holding other
files; a folder that is not a gdmix model is never replaced). It is replaced atomically:
readers see the old model or the new one, never neither.

--refit-on train,validation trains once more, on the listed tables together, with what
validation chose (l2 values, pass count, GBDT trees and deep epochs per pass), and saves
that refit model; its manifest's lineage (mode "refit") records the source's choices."""

logger = logging.getLogger("gdmix")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix train``."""
    parser.add_argument("--config", required=True, type=Path, help="YAML config file")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--output", type=Path, help="model directory (overrides 'output')")
    where.add_argument(
        "--store",
        type=Path,
        help="publish the model as the next version of this model store, and promote it",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the model directory even when it holds files besides a gdmix model",
    )
    parser.add_argument(
        "--trust-custom-code",
        action="store_true",
        help="allow init_model folders to name custom PyTorch modules to import",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write report.html into the model directory (plots; the test table's\n"
        "calibration and accuracy when the config names one)",
    )
    parser.add_argument(
        "--refit-on",
        metavar="TABLES",
        help="after training, refit on these tables together (train,validation) with the\n"
        "chosen l2, passes, trees and epochs, and save the refit model",
    )
    parser.add_argument("--n-threads", type=int, help="threads for per-entity solves")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--engine",
        choices=["local", "dask", "streaming"],
        help="where to train (overrides training.engine; streaming: Parquet larger than\n"
        "memory, see docs/streaming.md)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="dask scheduler address, e.g. tcp://10.0.0.1:8786 (default: a LocalCluster)",
    )
    parser.add_argument("--n-workers", type=int, help="workers of the LocalCluster (dask)")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="processes on this machine for data-parallel training of the deep coordinates\n"
        "(torch.distributed; default 1). See docs/deep.md for several machines",
    )


def _run_distributed(args: argparse.Namespace) -> int:
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
    if args.overwrite:
        extra.append("--overwrite")
    if args.trust_custom_code:
        extra.append("--trust-custom-code")
    try:
        report = launch(args.config, args.output, args.nproc, extra)
    except DistributedError as err:
        print(f"gdmix train: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, default=str))
    return 0


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the test table (if the config names one), save, print metrics."""
    from gdmix.config import load_config, model_output, with_overrides
    from gdmix.model_dir import check_model_target, check_writable_parent
    from gdmix.training import fit, log_callback

    if args.nproc != 1:
        if args.store is not None:
            raise ConfigError("--store is not supported with --nproc; use --output")
        if args.refit_on is not None:
            raise ConfigError("--refit-on is not supported with --nproc")
        return _run_distributed(args)
    config = with_overrides(
        load_config(args.config),
        training={
            "n_threads": args.n_threads,
            "engine": args.engine,
            "progress": False if args.no_progress or args.quiet else None,
        },
        dask={"scheduler": args.scheduler, "n_workers": args.n_workers},
    )
    output = None
    if args.store is None:
        output = model_output(config, args.output)
        check_model_target(output, overwrite=args.overwrite)  # before any work
    else:
        check_writable_parent(args.store / "versions")
    refit_tables = _refit_tables(args.refit_on, config) if args.refit_on is not None else None
    model = fit(config, callbacks=[log_callback], trust_custom_code=args.trust_custom_code)
    if refit_tables is not None:
        from gdmix.refit import refit

        logger.info("refitting on %s", ", ".join(refit_tables))
        model = refit(
            model,
            [getattr(config.data, name) for name in refit_tables],
            training=config.training,
            callbacks=[log_callback],
            trust_custom_code=args.trust_custom_code,
        )
    if config.data.test is not None:
        model.metrics["test"] = model.evaluate(config.data.test, where="test data")
    report: dict[str, object] = {}
    if output is not None:
        model.save(output, overwrite=args.overwrite)
        logger.info("model saved to %s", output)
        report["model"] = str(output)
        saved = output
    else:
        from gdmix.store import ModelStore

        store = ModelStore(args.store)
        version = store.publish(model.write_into, promote=True, reason="gdmix train")
        saved = store.path(version)
        report.update(model=str(saved), version=version)
    if args.report:
        from gdmix.report import write_report

        path = write_report(model, Path(saved) / "report.html", config.data.test,
                            inside_model=True)  # fmt: skip
        logger.info("report written to %s", path)
        report["report"] = str(path)
    if refit_tables is not None:
        report["refit"] = {"on": refit_tables, **model.lineage["source"]}
    print(json.dumps({**report, **model.metrics}, indent=2, default=str))
    return 0


def _refit_tables(value: str, config: GDMixConfig) -> list[str]:
    """The table names of ``--refit-on``, checked against the config before any work."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    allowed = ("train", "validation")
    bad = [n for n in names if n not in allowed]
    if not names or bad or len(set(names)) != len(names):
        raise ConfigError(
            f"--refit-on takes a comma-separated list of {' and '.join(allowed)} (e.g. "
            f"train,validation). Got {value!r} instead"
        )
    data = config.data
    missing = [n for n in names if getattr(data, n) is None]
    if missing:
        raise ConfigError(f"--refit-on {value}: the config names no {missing[0]} data")
    return names

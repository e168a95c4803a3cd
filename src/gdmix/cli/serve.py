"""``gdmix serve``: an HTTP scoring service over a model store, with hot swaps."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "serve"
HELP = "serve a model over HTTP (POST /score), swapping in new store versions"
DESCRIPTION = """\
Serve the current version of a model store (--store) or a model folder (--model) over
HTTP until interrupted:

  POST /score    {"rows": [{...}, ...], "context": {...}} -> per-coordinate scores,
                 total logit and probability of every row (one vectorised pass)
  GET  /healthz  GET /model (version, lineage, coordinates)  GET /metrics (Prometheus)
  POST /reload   load the version the store points at now

The store's 'current' pointer (or the model folder) is checked every --poll-interval
seconds; a new version is loaded and checked in the background and swapped in
atomically: requests in flight finish on the version they started with. A version that
fails to load is refused and the old one keeps serving (logged, counted in /metrics).
Bad requests get a 4xx naming the field. Needs the 'serve' extra (pip install
gdmix[serve]).

  gdmix serve --store models/ctr --port 8000
  curl -s localhost:8000/score -d '{"rows": [{"user_id": 42, "item_id": 7, "x1": 0.3}]}'"""

logger = logging.getLogger("gdmix")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix serve``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", type=Path, help="model store: serve its current version")
    source.add_argument("--model", type=Path, help="model folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between checks for a new version (1.0); 0: only on POST /reload",
    )
    parser.add_argument(
        "--max-rows", type=int, default=10_000, help="most rows per request (10000)"
    )
    parser.add_argument(
        "--trust-custom-code",
        action="store_true",
        help="allow the model to import the custom PyTorch module its manifest names",
    )


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve until interrupted."""
    from gdmix.errors import ConfigError, ModelDirectoryError
    from gdmix.store import is_store

    if args.max_rows < 1:
        raise ConfigError(f"--max-rows must be >= 1. Got {args.max_rows} instead")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be within 1..65535. Got {args.port} instead")
    if args.store is not None and not is_store(args.store):
        raise ModelDirectoryError(f"{args.store} is not a model store (no versions/ folder)")
    try:
        from gdmix.serving.app import run_server
    except ImportError as err:
        raise ConfigError(
            f"gdmix serve needs the 'serve' extra ({err.name} is missing): "
            "pip install 'gdmix[serve]'"
        ) from None
    from gdmix.serving.swap import ModelService

    service = ModelService(args.store or args.model, poll_interval=args.poll_interval,
                           trust_custom_code=args.trust_custom_code)  # fmt: skip
    model = service.start()
    logger.info("serving version %s from %s on http://%s:%d", model.version, model.path,
                args.host, args.port)  # fmt: skip
    level = logging.getLevelName(logging.getLogger("gdmix").getEffectiveLevel()).lower()
    run_server(service, host=args.host, port=args.port, max_rows=args.max_rows,
               log_level="warning" if level == "warning" else "info")  # fmt: skip
    return 0

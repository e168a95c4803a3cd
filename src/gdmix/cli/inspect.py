"""``gdmix inspect``: one screen about a saved model, or one entity's model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gdmix.errors import ConfigError

NAME = "inspect"
HELP = "one screen about a saved model (or one entity's model)"
DESCRIPTION = """\
Print what a model holds: provenance, metrics, every coordinate's size and
hyper-parameters, the training history pass by pass, the fixed effect's largest
coefficients, and per random effect the spread of its intercepts and coefficients with
their shrinkage (entities binned by rows seen).

  gdmix inspect models/ctr                      the model (or a store's current version)
  gdmix inspect models/ctr --json               the same as JSON
  gdmix inspect models/ctr --entity per_user=42 one entity's coefficients, by feature"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix inspect``."""
    parser.add_argument("model", type=Path, help="model directory or model store")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--entity", metavar="COORDINATE=ID", help="show one entity's model")
    parser.add_argument("--top", type=int, default=10, help="coefficients listed (10)")
    parser.add_argument("--trust-custom-code", action="store_true",
                        help="allow the model to import the custom module it names")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Print the summary."""
    from gdmix.model import GDMixModel
    from gdmix.summary import entity_summary, render_entity

    model = GDMixModel.load(args.model, trust_custom_code=args.trust_custom_code)
    if args.entity is not None:
        name, sep, entity = args.entity.partition("=")
        if not sep or not name or not entity:
            raise ConfigError(f"--entity takes COORDINATE=ID. Got {args.entity!r} instead")
        info = entity_summary(model, name, entity)
        print(json.dumps(info, indent=2) if args.json else render_entity(info))
        return 0
    summary = model.summary(as_dict=args.json, top=args.top)
    print(json.dumps(summary, indent=2, default=str) if args.json else summary)
    return 0

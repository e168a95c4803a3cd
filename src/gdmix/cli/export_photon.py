"""``gdmix export-photon``: a model's linear coordinates as Photon Avro model files."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "export-photon"
HELP = "write a model's fixed and random effects as Photon BayesianLinearModelAvro files"
DESCRIPTION = """\
Write every fixed and random coordinate of a model as Photon's GAME model folder:
fixed-effect/<name>/coefficients/part-00000.avro (one record, model id 'fixed-effect')
and random-effect/<name>/coefficients/part-00000.avro (one record per entity, model id
= entity id), each with its id-info, and gdmix-photon.json (what Photon's records cannot
hold, so that gdmix import-photon gives back the same model). Numeric columns are named
(column, ""), categorical levels (column, level), bag keys (name, term), the intercept
("(INTERCEPT)", ""); deep and GBDT coordinates are left out.

  gdmix export-photon models/ctr photon/ctr
  gdmix export-photon models/ctr photon/ctr --coordinates global,per_user --overwrite

OUT must be new or empty; an earlier export is replaced only with --overwrite, any
other folder never."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix export-photon``."""
    parser.add_argument("model", type=Path, help="model directory or model store")
    parser.add_argument("output", type=Path, help="export folder")
    parser.add_argument("--coordinates", help="comma-separated coordinates (default: linear ones)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export")


def run(args: argparse.Namespace) -> int:
    """Export the model."""
    from gdmix.photon import export_model

    names = None
    if args.coordinates:
        names = [n.strip() for n in args.coordinates.split(",") if n.strip()]
    path = export_model(args.model, args.output, coordinates=names, overwrite=args.overwrite)
    print(path)
    return 0

"""``gdmix import-photon``: Photon Avro model files as a gdmix model directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from gdmix.errors import ConfigError

NAME = "import-photon"
HELP = "build a gdmix model from Photon BayesianLinearModelAvro files"
DESCRIPTION = """\
Read a Photon/GAME model folder (fixed-effect/<name>/..., random-effect/<name>/...) and/or
single fixed- and random-effect Avro files, and save them as a gdmix model directory.
Each coordinate's features (numeric, categorical and bag columns), entity column and
roles come from --config (a gdmix config naming coordinates of the same names), else
from the folder's gdmix-photon.json (an export of gdmix), else every coefficient is a key
of the bag column 'features' and a random effect's entity column comes from its id-info
or --entity.

  gdmix import-photon photon/ctr --output models/ctr
  gdmix import-photon --fixed global=fe.avro --random per_user=re_user.avro \\
      --entity per_user=user_id --config ctr.yaml --output models/ctr

The output must be new, empty or a gdmix model (replaced atomically; a model with other
files in it only with --overwrite)."""


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{option} takes NAME=VALUE. Got {item!r} instead")
        if name in out:
            raise ConfigError(f"{option} names '{name}' twice")
        out[name] = value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix import-photon``."""
    parser.add_argument("source", nargs="?", type=Path, help="Photon/GAME model folder")
    parser.add_argument("--fixed", action="append", metavar="NAME=PATH",
                        help="a fixed effect's Avro file or folder (repeatable)")  # fmt: skip
    parser.add_argument("--random", action="append", metavar="NAME=PATH",
                        help="a random effect's Avro file or folder (repeatable)")  # fmt: skip
    parser.add_argument("--entity", action="append", metavar="NAME=COLUMN",
                        help="a random effect's entity column (repeatable)")  # fmt: skip
    parser.add_argument("--config", type=Path, help="gdmix config: features, entities, roles")
    parser.add_argument("--output", required=True, type=Path, help="model directory to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a model directory holding other files too")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Import and save."""
    from gdmix.model_dir import check_model_target
    from gdmix.photon import import_model

    fixed = _pairs(args.fixed, "--fixed")
    random = _pairs(args.random, "--random")
    entities = _pairs(args.entity, "--entity")
    check_model_target(args.output, overwrite=args.overwrite)  # before any work
    model = import_model(
        args.source, fixed=fixed, random=random, entities=entities, config=args.config
    )
    path = model.save(args.output, overwrite=args.overwrite)
    print(path)
    return 0

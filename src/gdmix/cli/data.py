"""``gdmix data``: write the example data sets as Parquet files."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "data"
HELP = "example data sets"
DESCRIPTION = "Find or download an example data set and write it as Parquet files."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix data``."""
    data_sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
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
    ml.add_argument("--overwrite", action="store_true", help="replace existing files")


def run(args: argparse.Namespace) -> int:
    """Write the data set's files and print their paths."""
    from gdmix.data.movielens import write_movielens_parquet

    paths = write_movielens_parquet(
        args.output,
        data_dir=args.data_dir,
        seed=args.seed,
        download=not args.no_download,
        overwrite=args.overwrite,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0

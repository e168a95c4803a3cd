"""``gdmix models``: look at and manage a model store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAME = "models"
HELP = "list, show, promote, roll back or clean the versions of a model store"
DESCRIPTION = """\
A model store is a folder of numbered versions and a 'current' pointer, switched
atomically (see 'gdmix refresh' and 'gdmix train --store').

  gdmix models list --store DIR            versions, newest last; * marks current
  gdmix models show --store DIR [VERSION]  one version's lineage and metrics (JSON)
  gdmix models promote --store DIR VERSION point 'current' at VERSION
  gdmix models rollback --store DIR        point 'current' back at the previous one
  gdmix models gc --store DIR [--keep 5]   delete old versions (never current or the
                                           rollback target)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gdmix models``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("list", "list the versions"), ("show", "show one version"),
                         ("promote", "make a version current"),
                         ("rollback", "make the previous version current again"),
                         ("gc", "delete old versions")):  # fmt: skip
        p = sub.add_parser(action, help=text, description=text)
        p.add_argument("--store", required=True, type=Path, help="the store's folder")
        if action == "list":
            p.add_argument("--json", action="store_true", help="print JSON")
        if action == "show":
            p.add_argument("version", nargs="?", default="current",
                           help="number, 'current' (default) or 'latest'")  # fmt: skip
        if action == "promote":
            p.add_argument("version", help="number or 'latest'")
        if action == "gc":
            p.add_argument("--keep", type=int, default=5, help="newest versions kept (5)")


def _row(info: Any) -> str:
    lineage, metrics = info.lineage, info.metrics
    after = (lineage.get("metrics_after") or {}).get("auc")
    val = after if after is not None else (metrics.get("validation") or {}).get("auc")
    parent = (lineage.get("parent") or {}).get("version")
    rows = ((lineage.get("data") or {}).get("train") or {}).get("rows")
    return (f"{'*' if info.current else ' '} {info.version:>6}  {info.created_utc or '':<20}  "
            f"{lineage.get('mode', 'train'):<11}  {'' if parent is None else parent:>6}  "
            f"{'' if rows is None else rows:>10}  "
            f"{'' if val is None else f'{val:.4f}':>8}  {lineage.get('guard', '')}")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Carry out the action; print what it did."""
    from gdmix.store import ModelStore

    store = ModelStore(args.store)
    if args.action == "list":
        infos = store.list()
        if args.json:
            print(json.dumps([i.to_dict() for i in infos], indent=2, default=str))
            return 0
        print(f"  {'version':>6}  {'created (UTC)':<20}  {'mode':<11}  {'parent':>6}  "
              f"{'rows':>10}  {'val AUC':>8}  guard")  # fmt: skip
        for info in infos:
            print(_row(info))
        return 0
    if args.action == "show":
        print(json.dumps(store.info(args.version).to_dict(), indent=2, default=str))
        return 0
    if args.action == "promote":
        number = store.promote(args.version, reason="gdmix models promote")
        print(f"current: version {number}")
        return 0
    if args.action == "rollback":
        print(f"current: version {store.rollback()}")
        return 0
    deleted = store.gc(keep=args.keep)
    print(f"deleted versions: {deleted}" if deleted else "nothing to delete")
    return 0

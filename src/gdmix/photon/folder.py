"""The Photon/GAME model folder: its layout and its safe replacement.

Layout (the one Photon's GAME drivers write and read)::

    OUT/
      fixed-effect/<coordinate>/id-info                    the feature shard id
      fixed-effect/<coordinate>/coefficients/part-00000.avro
      random-effect/<coordinate>/id-info                   entity column, feature shard id
      random-effect/<coordinate>/coefficients/part-00000.avro
      gdmix-photon.json                                    gdmix's own notes (see below)

Each ``part-*.avro`` holds ``BayesianLinearModelAvro`` records: one (model id
``fixed-effect``) for a fixed effect, one per entity (model id = entity id) for a random
effect. ``gdmix-photon.json`` records what Photon's records cannot hold (the column
roles, each coordinate's config and feature index map, the entity id type), so that
importing a folder gdmix exported gives back the same model; Photon ignores it.

An export is written into a hidden folder next to ``OUT`` and moved into place in one
rename (an existing export is swapped in one exchange where the file system allows), so
``OUT`` never holds half an export. ``OUT`` may be missing or empty; an export gdmix
wrote before is replaced only with ``overwrite``; any other folder is never replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from gdmix.errors import OutputError
from gdmix.model_dir import check_writable_parent, holds_ours, write_folder_atomically

__all__ = [
    "COEFFICIENTS",
    "EXPORT_ENTRIES",
    "FIXED_EFFECT",
    "ID_INFO",
    "NOTES",
    "PART",
    "RANDOM_EFFECT",
    "check_export_target",
    "write_export_folder",
]

FIXED_EFFECT = "fixed-effect"
RANDOM_EFFECT = "random-effect"
COEFFICIENTS = "coefficients"
ID_INFO = "id-info"
PART = "part-00000.avro"
NOTES = "gdmix-photon.json"
#: Top-level entries of an export.
EXPORT_ENTRIES = frozenset({FIXED_EFFECT, RANDOM_EFFECT, NOTES})


def _is_export(path: Path) -> bool:
    names = {e.name for e in path.iterdir()}
    return NOTES in names and names <= EXPORT_ENTRIES


def check_export_target(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check, before any work, that an export may be written at ``path``.

    Raises
    ------
    OutputError
        When ``path`` is a file, a folder holding anything but an earlier export, or an
        earlier export without ``overwrite``.
    """
    path = Path(path)
    if holds_ours(path, _is_export, "a gdmix Photon export") and not overwrite:
        raise OutputError(
            f"{path} holds an earlier export; pass --overwrite (overwrite=True) to replace it"
        )
    check_writable_parent(path)
    return path


def write_export_folder(
    path: str | os.PathLike[str], write: Callable[[Path], None], *, overwrite: bool = False
) -> Path:
    """Create or replace an export folder atomically: ``write(tmp)`` fills a hidden
    folder next to ``path``, which then takes its place (the save path of model
    directories, :func:`gdmix.model_dir.write_folder_atomically`).

    Raises
    ------
    OutputError
        When the target is unusable (see :func:`check_export_target`) or writing fails.
    """
    return write_folder_atomically(
        path,
        write,
        check=lambda p: check_export_target(p, overwrite=overwrite),
        ours=_is_export,
        action="write the export",
    )

"""The model directory on disk: its manifest, its safe replacement, its safe reading.

Layout (format version 1)::

    model_dir/
      manifest.json                         format, versions, column roles, coordinates
      coordinates/<name>/...                one folder per coordinate

Writing (:func:`write_model_directory`) never loses a model and never deletes what
gdmix did not write:

- the target is checked before any work (:func:`check_model_target`): new, empty, or a
  gdmix model and nothing else (``overwrite`` also accepts a model folder holding other
  files; a folder that is not a gdmix model is never replaced);
- writers of one path are serialised by a lock (:class:`gdmix.fsutil.PathLock`);
- the new model is written into a hidden sibling folder and swapped with the old one in
  one atomic exchange, so the path always holds a complete model (where the file system
  cannot exchange, two renames with the old model restored if the second fails);
- leftovers of saves killed part-way are removed (or, when a save died between the two
  renames, the old model is put back) by the next save.

Reading (:func:`read_manifest`, :func:`coordinate_folder`) checks the manifest's shape
and keeps every path inside the model folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gdmix._version import __version__
from gdmix.errors import ModelDirectoryError, OutputError
from gdmix.fsutil import PathLock, debris, fault_point, rename_exchange, sibling

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MODEL_FILES",
    "check_model_target",
    "coordinate_folder",
    "holds_ours",
    "is_model_directory",
    "jsonable",
    "locate_model",
    "model_extras",
    "read_manifest",
    "write_folder_atomically",
    "write_manifest_file",
    "write_model_directory",
]

FORMAT_NAME = "gdmix-model"
FORMAT_VERSION = 1
#: Top-level entries gdmix writes in a model directory.
MODEL_FILES = frozenset({"manifest.json", "coordinates", "report.html"})
logger = logging.getLogger("gdmix")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


# -- manifest -------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Numpy scalars and arrays inside nested containers as JSON types; non-finite
    floats as ``None`` (JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_manifest_file(folder: Path, body: dict[str, Any]) -> None:
    """Write ``manifest.json`` (format header + ``body``) as strict JSON, flushed to disk."""
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "gdmix_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **jsonable(body),
    }
    text = json.dumps(manifest, indent=2, allow_nan=False)
    with open(folder / "manifest.json", "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _no_constants(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a model directory.

    Checks the format and version, the types of the top-level entries, and every
    coordinate entry: a valid, unique name whose folder is ``coordinates/<name>``.

    Raises
    ------
    ModelDirectoryError
        When ``path`` is not a gdmix model directory or its manifest is malformed.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelDirectoryError(f"{path} is not a gdmix model directory (no such folder)")
    try:
        text = (path / "manifest.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelDirectoryError(
            f"{path} is not a gdmix model directory (no manifest.json)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelDirectoryError(f"{path}/manifest.json is unreadable: {err}") from None
    try:
        manifest = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except ValueError as err:
        raise ModelDirectoryError(f"{path}/manifest.json is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ModelDirectoryError(f"{path} is not a gdmix model directory (wrong manifest)")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{path}: model format version {version} is not supported (this gdmix reads "
            f"{FORMAT_VERSION})"
        )
    _check_manifest(path, manifest)
    return manifest


def _check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    where = f"{path}/manifest.json"
    if not isinstance(manifest.get("data"), dict):
        raise ModelDirectoryError(f"{where}: 'data' must be an object")
    coords = manifest.get("coordinates")
    if not isinstance(coords, list) or not coords:
        raise ModelDirectoryError(f"{where}: 'coordinates' must be a non-empty list")
    for key in ("metrics", "history"):
        expected = dict if key == "metrics" else list
        if manifest.get(key) is not None and not isinstance(manifest[key], expected):
            raise ModelDirectoryError(f"{where}: '{key}' must be a JSON {expected.__name__}")
    seen: set[str] = set()
    for i, entry in enumerate(coords):
        if not isinstance(entry, dict):
            raise ModelDirectoryError(f"{where}: coordinates[{i}] must be an object")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ModelDirectoryError(f"{where}: coordinates[{i}] has an invalid name {name!r}")
        if name in seen:
            raise ModelDirectoryError(f"{where}: coordinate '{name}' appears twice")
        seen.add(name)
        if entry.get("path") != f"coordinates/{name}":
            raise ModelDirectoryError(
                f"{where}: coordinate '{name}' must live in 'coordinates/{name}'. Got path "
                f"{entry.get('path')!r} instead"
            )
        for key in ("params", "config"):
            if not isinstance(entry.get(key), dict):
                raise ModelDirectoryError(
                    f"{where}: coordinate '{name}': '{key}' must be an object"
                )
        if entry["config"].get("name") != name:
            raise ModelDirectoryError(
                f"{where}: coordinate '{name}' has a config named {entry['config'].get('name')!r}"
            )


def coordinate_folder(path: str | os.PathLike[str], name: str) -> Path:
    """The folder of coordinate ``name``, checked to stay inside the model directory.

    Every file under it must resolve inside the model directory too (no symbolic link
    out of it).

    Raises
    ------
    ModelDirectoryError
        When the folder is missing or anything in it points outside the model.
    """
    root = Path(path).resolve()
    folder = Path(path) / "coordinates" / name
    if not folder.is_dir():
        raise ModelDirectoryError(f"{path}: coordinate folder coordinates/{name} is missing")
    for entry in [folder, *folder.rglob("*")]:
        if not entry.resolve().is_relative_to(root):
            raise ModelDirectoryError(
                f"{path}: {entry.relative_to(path)} points outside the model directory"
            )
    return folder


def locate_model(path: str | os.PathLike[str]) -> Path:
    """The folder to read the model at ``path`` from.

    That is ``path`` itself, except in the one state a save can leave without a model at
    ``path``: killed between its two renames on a file system that cannot exchange
    folders. The previous model then waits next to it (``.<name>.old-<hex>``), and is
    read from there (the next save puts it back).
    """
    path = Path(path)
    if path.exists():
        return path
    for kind, entry in debris(path):
        if kind == "old" and is_model_directory(entry):
            logger.warning("%s: reading the previous model from %s (an interrupted save)",
                           path, entry.name)  # fmt: skip
            return entry
    return path


# -- checks of a target -----------------------------------------------------------------


def is_model_directory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a readable gdmix manifest."""
    try:
        read_manifest(path)
    except ModelDirectoryError:
        return False
    return True


def model_extras(path: str | os.PathLike[str]) -> list[str]:
    """Entries of a model directory that gdmix did not write (relative paths)."""
    path = Path(path)
    try:
        names = {e["name"] for e in read_manifest(path)["coordinates"]}
    except ModelDirectoryError:
        names = set()
    extras = [e.name for e in path.iterdir() if e.name not in MODEL_FILES]
    coords = path / "coordinates"
    if coords.is_dir():
        extras += [f"coordinates/{e.name}" for e in coords.iterdir() if e.name not in names]
    elif coords.exists():
        extras.append("coordinates")
    return sorted(extras)


def _existing_ancestor(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable_parent(path: Path) -> None:
    """Raise :class:`OutputError` unless ``path``'s folder exists or can be created, and
    files can be created in it."""
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {path}: {ancestor} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=ancestor)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {ancestor}: {err.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def holds_ours(path: Path, ours: Callable[[Path], bool], what: str) -> bool:
    """Whether ``path`` is a non-empty folder holding ``what`` (``ours(path)`` says so);
    False when it is missing or empty.

    Raises
    ------
    OutputError
        When ``path`` is a file, or a non-empty folder holding anything else: gdmix never
        replaces what it did not write.
    """
    if not (path.exists() or path.is_symlink()):
        return False
    if not path.is_dir():
        raise OutputError(f"{path} exists and is not a folder; refusing to replace it")
    if not any(path.iterdir()):
        return False
    if not ours(path):
        raise OutputError(
            f"{path} is a folder that does not hold {what}; refusing to replace it (choose a "
            "new or empty folder)"
        )
    return True


def check_model_target(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check, before any work, that a model may be saved at ``path``.

    ``path`` may be missing, an empty folder, or a gdmix model directory with nothing
    else in it; with ``overwrite``, a model directory holding other files too. A file,
    or a non-empty folder that is not a gdmix model, is never accepted.

    Raises
    ------
    OutputError
        Naming what is in the way.
    """
    path = Path(path)
    if holds_ours(path, is_model_directory, "a gdmix model"):
        extras = model_extras(path)
        if extras and not overwrite:
            shown = ", ".join(extras[:5]) + (" ..." if len(extras) > 5 else "")
            raise OutputError(
                f"{path} holds a gdmix model and also files gdmix did not write ({shown}); "
                "move them away, or pass --overwrite (overwrite=True) to replace it all"
            )
    check_writable_parent(path)
    return path


# -- writing ---------------------------------------------------------------------------


def _clean_debris(target: Path, ours: Callable[[Path], bool]) -> None:
    """Remove leftovers of killed writes of ``target`` (holding its lock). When a write
    died between its two renames (nothing at ``target``), the old folder is put back if
    ``ours`` recognises it."""
    for kind, entry in debris(target):
        if kind == "old" and not target.exists() and ours(entry):
            os.replace(entry, target)
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _sync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk (a power cut after the swap
    must not leave a model whose files were still only in the page cache)."""
    for entry in [*folder.rglob("*"), folder]:
        flags = os.O_RDONLY | (os.O_DIRECTORY if entry.is_dir() else 0)
        fd = os.open(entry, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    if rename_exchange(tmp, target):
        fault_point("exchanged")
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous model
        return
    old = sibling(target, "old")
    os.replace(target, old)
    fault_point("old_moved")
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    fault_point("replaced")
    shutil.rmtree(old, ignore_errors=True)


def write_model_directory(
    path: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    lock_timeout: float = 600.0,
) -> Path:
    """Create or replace a model directory atomically.

    ``write(tmp)`` fills a hidden temporary folder next to ``path``; it then replaces
    ``path`` in one atomic exchange. If anything fails (``write`` raises, the disk is
    full, the process is killed), the model previously at ``path`` is still there and
    loadable; what a killed save left behind is removed by the next save.

    Parameters
    ----------
    path : path
        The model directory (see :func:`check_model_target` for what may be there).
    write : callable
        Fills the temporary folder.
    overwrite : bool
        Also replace a model directory that holds files gdmix did not write.
    lock_timeout : float
        Seconds to wait for another process writing the same path.

    Raises
    ------
    OutputError
        When the target is unusable, locked for longer than ``lock_timeout``, or writing
        fails (the message carries the system's reason, e.g. "No space left on device").
    """
    return write_folder_atomically(
        path,
        write,
        check=lambda p: check_model_target(p, overwrite=overwrite),
        ours=is_model_directory,
        action="save the model to",
        lock_timeout=lock_timeout,
    )


def write_folder_atomically(
    path: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    check: Callable[[Path], object],
    ours: Callable[[Path], bool],
    action: str,
    lock_timeout: float = 600.0,
) -> Path:
    """The save path of every folder gdmix writes (model directories, Photon exports).

    ``check(path)`` refuses an unusable target (before any work, and again under the
    path's lock); ``write(tmp)`` fills a hidden sibling folder, which is flushed to disk
    and swapped into place in one exchange (two renames where the file system cannot
    exchange, the old folder put back if the second fails). Leftovers of killed writes
    are removed first; an old folder ``ours`` recognises is put back when a write died
    between its renames.

    Raises
    ------
    OutputError
        When ``check`` refuses, the lock is held longer than ``lock_timeout``, or writing
        fails ("cannot ``action`` ``path``: reason").
    """
    path = Path(path)
    check(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with PathLock(path, timeout=lock_timeout):
            _clean_debris(path, ours)
            check(path)  # again, now that it is ours
            tmp = sibling(path, "tmp")
            tmp.mkdir()
            try:
                fault_point("tmp_created")
                write(tmp)
                _sync_tree(tmp)
                fault_point("written")
                _swap_into_place(tmp, path)
                fault_point("done")
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        reason = err.strerror or str(err)
        where = f" ({err.filename})" if err.filename else ""
        raise OutputError(f"cannot {action} {path}: {reason}{where}") from None
    return path

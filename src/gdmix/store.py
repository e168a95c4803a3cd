"""A model store: numbered versions of a model plus a ``current`` pointer.

Layout::

    store/
      versions/000001/          a model directory (see gdmix.model_dir)
      versions/000002/
      current -> versions/000002     a relative symbolic link, switched atomically
      promotions.jsonl          one line per promotion: time, version, previous, reason

- Versions are written with the one save path (:func:`gdmix.model_dir.write_model_directory`)
  under numbers allocated while holding the store's lock, so two publishers never take
  the same number.
- ``current`` is switched by creating a new link under a temporary name and renaming it
  over the old one (``rename(2)`` is atomic): a reader resolves ``current`` to one
  version folder and reads that folder, never half of one version and half of another.
- Promote, rollback and gc hold the store's lock; a second one waits (and says so), then
  gives up after ``lock_timeout`` seconds with a clear message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdmix.errors import ModelDirectoryError, OutputError
from gdmix.fsutil import PathLock, sibling
from gdmix.model_dir import is_model_directory, read_manifest, write_model_directory

__all__ = ["ModelStore", "VersionInfo", "is_store"]

logger = logging.getLogger("gdmix")

_VERSION = re.compile(r"^\d{6,}$")


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a model store (it has a ``versions`` folder)."""
    return (Path(path) / "versions").is_dir()


@dataclass
class VersionInfo:
    """One version of a store, as ``gdmix models list`` shows it."""

    version: int
    path: Path
    current: bool
    created_utc: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "version": self.version,
            "path": str(self.path),
            "current": self.current,
            "created_utc": self.created_utc,
            "lineage": self.lineage,
            "metrics": self.metrics,
        }


class ModelStore:
    """Numbered model versions with an atomically switched ``current`` pointer.

    Parameters
    ----------
    root : path
        The store's folder (created on the first :meth:`publish`).
    lock_timeout : float
        Seconds to wait for another process holding the store's lock.
    """

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout: float = 600.0) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------
    @property
    def versions_dir(self) -> Path:
        """Folder of the versions."""
        return self.root / "versions"

    def path(self, version: int | str = "current") -> Path:
        """Folder of ``version`` (a number, ``"current"`` or ``"latest"``), resolved.

        Raises
        ------
        ModelDirectoryError
            When the store or the version does not exist.
        """
        number = self.resolve(version)
        return self.versions_dir / _name(number)

    def resolve(self, version: int | str) -> int:
        """The number of ``version``: an int, a numeric string, ``current`` or ``latest``."""
        if not is_store(self.root):
            raise ModelDirectoryError(f"{self.root} is not a model store (no versions/ folder)")
        if version == "current":
            current = self.current()
            if current is None:
                raise ModelDirectoryError(f"store {self.root} has no current version yet")
            return current
        if version == "latest":
            numbers = self.numbers()
            if not numbers:
                raise ModelDirectoryError(f"store {self.root} holds no version yet")
            return numbers[-1]
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise ModelDirectoryError(
                f"a version is a number, 'current' or 'latest'. Got {version!r} instead"
            ) from None
        if number not in self.numbers():
            raise ModelDirectoryError(
                f"store {self.root} has no version {number} (it has {self.numbers()})"
            )
        return number

    def numbers(self) -> list[int]:
        """Version numbers, oldest first (complete versions only)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in self.versions_dir.iterdir()
            if _VERSION.match(p.name) and (p / "manifest.json").is_file()
        )

    def current(self) -> int | None:
        """The number ``current`` points to, or None."""
        link = self.root / "current"
        try:
            target = os.readlink(link)
        except (FileNotFoundError, OSError):
            return None
        name = Path(target).name
        return int(name) if _VERSION.match(name) else None

    # -- reading -------------------------------------------------------------------------
    def info(self, version: int | str = "current") -> VersionInfo:
        """What the manifest of ``version`` says of it."""
        number = self.resolve(version)
        path = self.versions_dir / _name(number)
        manifest = read_manifest(path)
        return VersionInfo(
            version=number,
            path=path,
            current=number == self.current(),
            created_utc=manifest.get("created_utc"),
            lineage=manifest.get("lineage") or {},
            metrics=manifest.get("metrics") or {},
        )

    def list(self) -> list[VersionInfo]:
        """Every version, oldest first."""
        return [self.info(n) for n in self.numbers()]

    def promotions(self) -> list[dict[str, Any]]:
        """The promotion log, oldest first."""
        log = self.root / "promotions.jsonl"
        if not log.is_file():
            return []
        out = []
        for line in log.read_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash: skip it
                    continue
        return out

    # -- writing -------------------------------------------------------------------------
    def _lock(self) -> PathLock:
        return PathLock(self.root / "store", timeout=self.lock_timeout)

    def publish(
        self,
        write: Callable[[Path], None],
        *,
        promote: bool = False,
        reason: str = "publish",
    ) -> int:
        """Write a new version with ``write(folder)`` and return its number.

        The number is allocated under the store's lock (a placeholder folder reserves
        it); the version itself is written through the atomic save path. With
        ``promote``, ``current`` then points to it.

        Raises
        ------
        OutputError
            When the store cannot be written (or its lock is held too long).
        """
        try:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            with self._lock():
                numbers = [
                    int(p.name) for p in self.versions_dir.iterdir() if _VERSION.match(p.name)
                ]
                number = max(numbers, default=0) + 1
                target = self.versions_dir / _name(number)
                target.mkdir()  # reserved: an empty folder, replaced by the save below
        except OSError as err:
            raise OutputError(f"cannot write to store {self.root}: {err.strerror}") from None
        try:
            write_model_directory(target, write, lock_timeout=self.lock_timeout)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        if promote:
            self.promote(number, reason=reason)
        return number

    def promote(self, version: int | str, *, reason: str = "promote") -> int:
        """Point ``current`` at ``version`` (atomically) and log it; returns its number."""
        with self._lock():
            number = self.resolve(version)
            if not is_model_directory(self.versions_dir / _name(number)):
                raise ModelDirectoryError(f"store {self.root}: version {number} is not loadable")
            previous = self.current()
            self._switch(number)
            self._log({"version": number, "previous": previous, "reason": reason})
        logger.info("store %s: current is now version %d (was %s)", self.root, number, previous)
        return number

    def rollback(self) -> int:
        """Point ``current`` back at the version that was current before it; returns it.

        Raises
        ------
        ModelDirectoryError
            When no earlier promoted version remains in the store.
        """
        with self._lock():
            current = self.current()
            existing = set(self.numbers())
            history = [p["version"] for p in self.promotions() if "version" in p]
            candidates = [v for v in reversed(history) if v != current and v in existing]
            # The version promoted just before the current one's latest promotion.
            if current in history:
                last = len(history) - 1 - history[::-1].index(current)
                before = [v for v in history[:last] if v != current and v in existing]
                candidates = list(reversed(before)) or candidates
            if not candidates:
                raise ModelDirectoryError(
                    f"store {self.root}: no earlier promoted version to roll back to"
                )
            target = candidates[0]
            self._switch(target)
            self._log({"version": target, "previous": current, "reason": "rollback"})
        logger.info("store %s: rolled back to version %d (was %s)", self.root, target, current)
        return target

    def gc(self, keep: int = 5) -> list[int]:
        """Delete old versions, keeping the ``keep`` newest, the current one and the one a
        rollback would return to; returns the numbers deleted."""
        if keep < 1:
            raise OutputError(f"gc keeps at least 1 version. Got keep={keep}")
        with self._lock():
            numbers = self.numbers()
            current = self.current()
            history = [p["version"] for p in self.promotions() if "version" in p]
            protected = set(numbers[-keep:]) | {current}
            earlier = [v for v in reversed(history) if v != current]
            if earlier:
                protected.add(earlier[0])
            doomed = [n for n in numbers if n not in protected]
            for n in doomed:
                folder = self.versions_dir / _name(n)
                trash = sibling(folder, "old")
                os.replace(folder, trash)  # gone from listings at once, then removed
                shutil.rmtree(trash, ignore_errors=True)
            # Placeholders of publishers that died before writing anything.
            for p in self.versions_dir.iterdir():
                if _VERSION.match(p.name) and p.is_dir() and not any(p.iterdir()):
                    if int(p.name) < max(numbers, default=0):
                        p.rmdir()
        if doomed:
            logger.info("store %s: removed versions %s", self.root, doomed)
        return doomed

    def _switch(self, number: int) -> None:
        link = self.root / "current"
        tmp = sibling(link, "tmp")
        os.symlink(os.path.join("versions", _name(number)), tmp)
        os.replace(tmp, link)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _log(self, entry: dict[str, Any]) -> None:
        entry = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}
        with open(self.root / "promotions.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _name(number: int) -> str:
    return f"{number:06d}"

"""File-system primitives for saves that never lose data.

- :func:`rename_exchange` swaps two paths in one step (Linux ``renameat2`` with
  ``RENAME_EXCHANGE``), so a folder can be replaced without a moment where nothing is
  at its path.
- :class:`PathLock` serialises the writers of one path with an advisory lock file next
  to it (``.<name>.lock``), removed again on release.
- :func:`debris` finds what a killed save left behind (``.<name>.tmp-<hex>`` and
  ``.<name>.old-<hex>`` folders), for the next save to clean up or recover.
- :func:`fault_point` marks the steps of a save, so that tests can kill or fail a save
  at a chosen step (a no-op unless a hook is installed).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from gdmix.errors import OutputError

__all__ = [
    "WORK_MARKER",
    "PathLock",
    "debris",
    "fault_point",
    "fresh_work_folder",
    "rename_exchange",
    "set_fault_hook",
    "sibling",
]

logger = logging.getLogger("gdmix")

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}
_renameat2: Callable[..., int] | bool | None = False  # False: not looked up yet

_fault_hook: Callable[[str], None] | None = None


def set_fault_hook(hook: Callable[[str], None] | None) -> None:
    """Install ``hook``, called with the name of every :func:`fault_point` reached
    (tests use it to kill or fail a save at a chosen step); ``None`` removes it."""
    global _fault_hook
    _fault_hook = hook


def fault_point(name: str) -> None:
    """A named step of a save (see :func:`set_fault_hook`)."""
    if _fault_hook is not None:
        _fault_hook(name)


def _libc_renameat2() -> Callable[..., int] | None:
    global _renameat2
    if _renameat2 is False:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]  # fmt: skip
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = None
    return _renameat2 or None


def rename_exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (both must exist).

    Returns
    -------
    bool
        ``False`` when this system or file system cannot exchange (the caller falls back
        to two renames); ``True`` when the swap happened.

    Raises
    ------
    OSError
        Any other failure.
    """
    fn = _libc_renameat2()
    if fn is None:
        return False
    res = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


#: File that marks a scratch folder as gdmix's own (safe to empty and reuse).
WORK_MARKER = ".gdmix-work"


def fresh_work_folder(folder: str | os.PathLike[str]) -> Path:
    """An empty scratch folder at ``folder``, marked as gdmix's.

    A missing or empty folder is created and marked; a folder gdmix made before (it holds
    the marker) is emptied; any other non-empty folder is left alone.

    Raises
    ------
    OutputError
        When ``folder`` holds files gdmix did not write, or is a file.
    """
    import shutil

    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not (path / WORK_MARKER).is_file():
            raise OutputError(
                f"{path} holds files gdmix did not write; refusing to empty it (choose another "
                "work folder)"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / WORK_MARKER).write_text("scratch folder of gdmix; emptied by the next run\n")
    return path


def sibling(target: Path, kind: str) -> Path:
    """A fresh hidden name next to ``target``: ``.<name>.<kind>-<hex>``."""
    return target.with_name(f".{target.name}.{kind}-{uuid.uuid4().hex[:12]}")


def debris(target: Path) -> list[tuple[str, Path]]:
    """Leftovers of interrupted saves of ``target``: ``(kind, path)`` with kind ``tmp``
    (a half-written new version) or ``old`` (the previous version, moved aside)."""
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-[0-9a-f]{{8,}}$")
    found = []
    for entry in parent.iterdir():
        match = pattern.match(entry.name)
        if match:
            found.append((match.group(1), entry))
    return sorted(found, key=lambda kv: kv[1].name)


class PathLock:
    """Exclusive advisory lock serialising the writers of ``target``.

    The lock is ``flock`` on ``.<name>.lock`` next to ``target``; the file is removed on
    release (a file left by a killed process holds no lock and is reused, then removed).
    A second writer waits, saying once which process it waits for, and gives up after
    ``timeout`` seconds with :class:`gdmix.errors.OutputError`.

    Parameters
    ----------
    target : Path
        The path being written.
    timeout : float
        Seconds to wait for another writer.
    """

    def __init__(self, target: Path, timeout: float = 600.0) -> None:
        self.target = Path(target)
        self.path = self.target.with_name(f".{self.target.name}.lock")
        self.timeout = timeout
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return "another process"
        return f"process {pid}" if pid else "another process"

    def acquire(self) -> None:
        """Take the lock, waiting for another writer up to ``timeout`` seconds."""
        import fcntl

        deadline = time.monotonic() + self.timeout
        announced = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self._holder()
                if time.monotonic() >= deadline:
                    raise OutputError(
                        f"{self.target} is being written by {holder} (lock {self.path}); "
                        f"gave up after {self.timeout:g} s"
                    ) from None
                if not announced:
                    logger.warning("waiting for %s, which is writing %s", holder, self.target)
                    announced = True
                time.sleep(0.05)
                continue
            # The previous holder may have removed the file between our open and flock.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
            return

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> PathLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

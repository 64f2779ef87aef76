"""Writing exports onto disks that may be full: check the free space first, and turn the
``ENOSPC``/``EDQUOT`` of a write into one clear error naming the path and the space needed."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
MARGIN_BYTES = 1 << 20  # room for the folder entries and the small files written beside


class NoSpaceError(OSError):
    """Not enough free space at ``path`` for ``needed`` bytes (None: unknown; ``free`` were available)."""

    def __init__(self, path: Path, needed: int | None, free: int | None, *, at_least: bool = False) -> None:
        super().__init__(errno.ENOSPC, "no space left on device", str(path))
        self.path, self.needed, self.free, self.at_least = path, needed, free, at_least

    def __str__(self) -> str:
        bound = "at least " if self.at_least else ""
        need = f"it needs {bound}{_mb(self.needed)}" if self.needed is not None else "it needs more than is free"
        have = f"{_mb(self.free)} free" if self.free is not None else "the disk is full"
        return (f"not enough space to write the export {self.path}: {need}, {have}; "
                "free some space there or choose another folder (nothing was written)")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def free_bytes(directory: Path) -> int | None:
    """Free bytes on the filesystem of ``directory`` (None when it cannot be asked)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def ensure_free_space(directory: Path, needed: int, shown: Path, *, at_least: bool = False) -> None:
    """Raise :class:`NoSpaceError` (naming ``shown``) unless ``needed`` bytes plus a margin are free;
    ``at_least``: ``needed`` is a lower bound of what will be written (checked before the work
    that gives the exact size), and the message says so."""
    free = free_bytes(directory)
    if free is not None and free < needed + MARGIN_BYTES:
        raise NoSpaceError(shown, needed + MARGIN_BYTES, free, at_least=at_least)


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for want of space (or quota)."""
    return isinstance(exc, OSError) and not isinstance(exc, NoSpaceError) and exc.errno in _NO_SPACE


def write_file(path: Path, data: bytes, shown: Path | None = None) -> None:
    """Write ``data`` to a new file at ``path`` and flush it to disk (so a full disk shows here,
    not later). A failed write leaves no file and raises :class:`NoSpaceError` (naming ``shown``,
    default ``path``) for want of space, else the original ``OSError``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as e:
        path.unlink(missing_ok=True)
        if is_no_space(e):
            raise NoSpaceError(shown or path, len(data), free_bytes(path.parent)) from None
        raise

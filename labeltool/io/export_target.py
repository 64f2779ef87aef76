"""Where an export lands: the marker that says a folder is an export, the check that
``overwrite`` replaces only a previous export, locks, leftover clean-up and the final swap.

An export writes ``labeltool-export.json`` at its top level. ``overwrite`` replaces a non-empty
folder only when it holds that marker, or has the layout exports had before the marker
existed (nothing but ``dataset/`` with its ``manifest.csv`` and/or ``model/`` with its
``model.json``), and nothing else at its top level: a folder of the user's is never deleted.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from labeltool.io.disk_space import write_file

MARKER = "labeltool-export.json"
_PARTS = {"dataset": "manifest.csv", "model": "model.json"}  # each part and the file it always has
MARKER_FORMAT = {"format": "labeltool-export", "version": 1}


def write_marker(directory: Path, parts: Sequence[str]) -> None:
    """Mark ``directory`` (a new export) as one, listing the ``parts`` it holds."""
    body = json.dumps({**MARKER_FORMAT, "parts": list(parts)}, indent=2, sort_keys=True) + "\n"
    write_file(directory / MARKER, body.encode())


def is_empty_folder(path: Path) -> bool:
    """Whether ``path`` is a folder with nothing in it (a symlink or a file is not)."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def why_not_replaceable(out: Path) -> str | None:
    """None when ``out`` is a previous export that ``overwrite`` may replace; else why not."""
    if not out.is_dir() or out.is_symlink():
        return "it is not a folder"
    names = sorted(p.name for p in out.iterdir())
    extra = [n for n in names if n not in _PARTS and n != MARKER]
    if extra:
        shown = ", ".join(repr(n) for n in extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        return f"it holds {shown}, which no export writes"
    marked = (out / MARKER).is_file() and not (out / MARKER).is_symlink()
    if not marked and not all((out / n / _PARTS[n]).is_file() for n in names):  # exports before the marker
        return f"it has no {MARKER} and is not laid out as an export"
    return None


OVERWRITE_HINT = "pass overwrite=True (--overwrite)"


class TargetExistsError(FileExistsError):
    """The export target is not empty and ``overwrite`` was not given; ``how`` says how to give it."""

    def __init__(self, out: Path, how: str = OVERWRITE_HINT) -> None:
        super().__init__(f"export target {out} exists and is not empty; {how} to replace a previous export, "
                         "or choose a new folder")
        self.out, self.how = out, how

    def worded(self, how: str) -> TargetExistsError:
        """The same refusal, saying ``how`` to overwrite in a front end's own words."""
        return TargetExistsError(self.out, how)


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse to write into ``out`` unless it is absent, empty, or (with ``overwrite``) a
    previous export holding nothing else at its top level."""
    if not (out.exists() or out.is_symlink()) or is_empty_folder(out):
        return
    if not overwrite:
        raise TargetExistsError(out)
    reason = why_not_replaceable(out)
    if reason is not None:
        raise FileExistsError(
            f"export target {out} is not a previous labeltool export ({reason}); overwrite only replaces "
            "an export: choose a new or empty folder, or move its contents away first (nothing was deleted)")


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Exclusive ``flock`` on a directory (serialises leftover clean-up and swaps between exports)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_lock(directory: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on ``directory``, or None when someone else holds it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the ``.OUT.partial-*`` leftovers of killed exports beside ``out`` (a running
    export's folder is locked and kept); returns what was removed."""
    pattern = re.compile(re.escape(f".{out.name}.partial-") + r"[A-Za-z0-9_]{8}(-old)?")
    removed: list[Path] = []
    for p in sorted(out.parent.iterdir()):
        if not pattern.fullmatch(p.name):
            continue
        if p.is_symlink() or not p.is_dir():
            p.unlink(missing_ok=True)
        else:
            fd = try_lock(p)
            if fd is None:
                continue
            try:
                shutil.rmtree(p)
            finally:
                os.close(fd)
        removed.append(p)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_into_place(tmp: Path, out: Path) -> None:
    """Move the finished export to ``out``; a replaced ``out`` ends up at ``tmp`` and is deleted."""
    if out.exists() or out.is_symlink():
        if not _exchange(tmp, out):
            old = tmp.with_name(tmp.name + "-old")  # a stale leftover if killed right here
            os.rename(out, old)
            os.rename(tmp, out)
            os.rename(old, tmp)
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    else:
        os.rename(tmp, out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

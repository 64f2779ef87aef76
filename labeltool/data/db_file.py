"""The project database as a file: its identity, its integrity, and what an SQLite error means.

A :class:`~labeltool.data.store.Store` records the file's identity (device and inode) when it
opens it and compares it before each write, so a database deleted or replaced under a running
session is a loud refusal rather than writes into a file nobody will read again. Errors are
sorted by what the user has to do: a full or failing disk is not a damaged database.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

from labeltool.errors import (
    DamagedDatabaseError,
    DatabaseDiskError,
    DatabaseReplacedError,
    ProjectDatabaseError,
)

__all__ = ["FileIdentity", "check_identity", "explain_sqlite_error", "file_identity", "quick_check"]

FileIdentity = tuple[int, int]  # (st_dev, st_ino)

NEEDED_BYTES = 1 << 20  # free space SQLite needs beside the database: 32 KiB index, WAL pages, margin
_FULL, _IOERR, _CORRUPT, _NOTADB, _READONLY, _CANTOPEN = 13, 10, 11, 26, 8, 14


def file_identity(path: Path) -> FileIdentity | None:
    """``(st_dev, st_ino)`` of ``path``, or None when there is no file there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _recovery_hint(path: Path) -> str:
    return (f"restore {path.name} from a backup, or save what is still readable with "
            f"`sqlite3 {path} .recover | sqlite3 {path}.recovered` and put that file in its place, "
            "or move it away to start the project over (the images are not touched)")


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`DamagedDatabaseError` unless ``PRAGMA quick_check`` says ok."""
    problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise DamagedDatabaseError(
            f"cannot open the project database {path}: it is damaged (SQLite quick_check: "
            f"{'; '.join(problems)}); {_recovery_hint(path)}"
        )


def check_identity(conn: sqlite3.Connection, path: Path, opened: FileIdentity | None) -> None:
    """Raise :class:`DatabaseReplacedError` when ``path`` is no longer the file opened as ``opened``.

    What this connection still holds is copied beside it first (``project.sqlite.detached-<time>``),
    so the decisions it wrote are not lost with the deleted file, and its write-ahead log is
    emptied into the file it belongs to, so it cannot leak into the one now at ``path``."""
    now = file_identity(path)
    if opened is None or now == opened:
        return
    what = "deleted" if now is None else "replaced by another file"
    try:  # move this connection's WAL frames into its own file: left in the -wal, they would be read
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as pages of the file now at ``path``
    except sqlite3.Error:
        pass
    rescued = _save_detached_copy(conn, path)
    kept = (f"what this session had written is saved in {rescued}" if rescued is not None
            else "this session's copy could not be saved")
    raise DatabaseReplacedError(
        f"the project database {path} was {what} while this session had it open; nothing more was written "
        f"and {kept}. Put the right database back in place (or keep the new one) and open the project again"
    )


def _save_detached_copy(conn: sqlite3.Connection, path: Path) -> Path | None:
    target = path.with_name(f"{path.name}.detached-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        copy = sqlite3.connect(str(target))
        try:
            conn.backup(copy)
        finally:
            copy.close()
    except (sqlite3.Error, OSError):
        return None
    return target


def free_bytes(directory: Path) -> int | None:
    """Free bytes on the filesystem of ``directory`` (None when it cannot be asked)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def explain_sqlite_error(path: Path, error: sqlite3.Error, doing: str) -> ProjectDatabaseError:
    """The error to raise for ``error`` met while ``doing`` (e.g. "open") on the database ``path``.

    A full disk (SQLITE_FULL, or an I/O error with less than :data:`NEEDED_BYTES` free) and other
    I/O errors say the database is not reported damaged; only SQLITE_CORRUPT / SQLITE_NOTADB say
    it is damaged."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    name = getattr(error, "sqlite_errorname", None) or type(error).__name__
    head = f"cannot {doing} the project database {path} ({error}, {name})"
    free = free_bytes(path.parent)
    low = free is not None and free < NEEDED_BYTES
    kept = "nothing was lost" if doing == "open" else "this change was not saved, the earlier ones are intact"
    if primary == _FULL or (primary == _IOERR and low):
        have = f"{free / 2**20:.1f} MiB free" if free is not None else "its free space is unknown"
        return DatabaseDiskError(
            f"{head}: the disk holding {path.parent} is full ({have}); free at least "
            f"{NEEDED_BYTES // 2**20} MiB there and try again. The database is not damaged; {kept}"
        )
    if primary == _IOERR:
        return DatabaseDiskError(
            f"{head}: the disk or mount of {path.parent} failed a read or write; the database is not "
            "reported damaged, so leave it in place, check the disk (and the system log) and try again"
        )
    if primary in (_READONLY, _CANTOPEN):
        return DatabaseDiskError(
            f"{head}: SQLite cannot write in {path.parent}; check that the folder is writable and not on a "
            "read-only mount, or give another --project-dir"
        )
    if primary in (_CORRUPT, _NOTADB):
        return DamagedDatabaseError(f"{head}: it is damaged; {_recovery_hint(path)}")
    if "locked" in str(error):
        return ProjectDatabaseError(f"{head}: another process kept it busy; try again")
    return ProjectDatabaseError(f"{head}; the database is not reported damaged, so leave it in place and try again")

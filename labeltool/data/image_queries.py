"""Queries over the ``images`` table that avoid reading every row into Python.

``images_version`` counts the writes to the table (every transaction of a scan bumps it), so a
reader can keep what it derived from the rows until the version moves.
"""

from __future__ import annotations

import sqlite3

_VERSION_KEY = "images_version"


def bump_images_version(conn: sqlite3.Connection) -> None:
    """Count one more write to the images table (inside the writing transaction)."""
    conn.execute("INSERT INTO meta(key, value) VALUES (?, '1') "
                 "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1", (_VERSION_KEY,))


def images_version(conn: sqlite3.Connection) -> int:
    """Writes to the images table so far (0 for a project that has none recorded)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_VERSION_KEY,)).fetchone()
    return int(row[0]) if row is not None else 0


def usable_rows(conn: sqlite3.Connection) -> list[tuple[int, str, str | None]]:
    """``(id, relpath, sha256)`` of the present images that decoded fine, by id."""
    q = "SELECT id, relpath, sha256 FROM images WHERE present = 1 AND status = 'ok' ORDER BY id"
    return [(int(r[0]), str(r[1]), r[2]) for r in conn.execute(q)]


def present_counts(conn: sqlite3.Connection) -> tuple[int, list[tuple[str, str]]]:
    """The number of present images, and ``(relpath, error)`` of those that could not be used."""
    total = int(conn.execute("SELECT COUNT(*) FROM images WHERE present = 1").fetchone()[0])
    broken = [(str(r[0]), str(r[1] or "")) for r in conn.execute(
        "SELECT relpath, error FROM images WHERE present = 1 AND status != 'ok' ORDER BY id")]
    return total, broken

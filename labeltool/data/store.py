"""SQLite store of a labeling project: images, classes, rounds, suggestions and decisions.

The database runs in WAL mode with ``synchronous=FULL``: once a write method returns, the
decision is on disk and survives a crash or ``kill -9``. Decisions are append-only; an image's
current label is derived by replaying the log (:func:`labeltool.data.decisions.replay`), so undo is a
new row that cancels an earlier one and nothing is ever deleted.
"""

from __future__ import annotations

import json
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labeltool.data import decision_queries, image_queries
from labeltool.data.db_file import check_identity, explain_sqlite_error, file_identity, quick_check
from labeltool.data.decisions import ACTIONS, Decision, LabelState
from labeltool.data.rows import ImageRow, RoundRow, StoredSuggestion, image_row
from labeltool.errors import ProjectDatabaseError

__all__ = ["SCHEMA_VERSION", "ImageRow", "RoundRow", "Store", "StoredSuggestion"]

SCHEMA_VERSION = 2  # 2: decisions carry their actor (see decision_queries.upgrade)
_POLL_MS = 20  # SQLite's busy handler tries at 1, 2, 5, 10 ms... within one such wait

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS classes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    relpath TEXT NOT NULL UNIQUE,
    sha256 TEXT,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    seed_class_id INTEGER REFERENCES classes(id),
    present INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS images_sha ON images(sha256);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    config_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS suggestions (
    round INTEGER NOT NULL REFERENCES rounds(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    class_id INTEGER NOT NULL REFERENCES classes(id),
    confidence REAL NOT NULL,
    source TEXT NOT NULL,
    rank INTEGER NOT NULL,
    distance REAL,
    evidence_json TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (round, image_id)
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id),
    class_id INTEGER REFERENCES classes(id),
    action TEXT NOT NULL,
    round INTEGER,
    batch INTEGER NOT NULL,
    undoes INTEGER REFERENCES decisions(id),
    confidence REAL,
    ts REAL NOT NULL,
    actor TEXT
);
CREATE INDEX IF NOT EXISTS decisions_image ON decisions(image_id);
CREATE TRIGGER IF NOT EXISTS decisions_no_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS decisions_no_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
"""


class Store:
    """Connection to ``project.sqlite``; every write method commits before it returns."""

    UPSERT_CHUNK = 5000  # image rows per write transaction of a scan
    _seeds: tuple[int, dict[int, int]] | None  # (images_version, seed labels) as last read

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0, check: bool = True) -> None:
        """Open (creating when missing) the database at ``path``; ``check`` runs SQLite's
        ``quick_check`` first (a damaged file is refused, see :mod:`labeltool.data.db_file`)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout_s, self._seeds = timeout_s, None
        self._conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            if check:
                quick_check(self._conn, self.path)
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.executescript(_SCHEMA)
            version = self.get_meta("schema_version")
        except sqlite3.Error as e:  # not a database, damaged, full disk, read-only, or locked too long
            self._conn.close()
            raise explain_sqlite_error(self.path, e, "open") from None
        except ProjectDatabaseError:
            self._conn.close()
            raise
        self._identity = file_identity(self.path)
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} was written by a newer labeltool (schema {version} > {SCHEMA_VERSION}); "
                "upgrade labeltool to open it"
            )
        if decision_queries.needs_upgrade(self._conn):
            with self._tx() as c:
                decision_queries.upgrade(c, SCHEMA_VERSION)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        try:
            self._conn.close()
        except sqlite3.Error:
            pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """An immediate write transaction (takes the write lock up front, waits when busy) on the
        file this store opened: a database deleted or replaced since is refused, nothing written."""
        try:
            self._begin()
        except sqlite3.OperationalError as e:
            raise explain_sqlite_error(self.path, e, "write to") from None
        if file_identity(self.path) != self._identity:
            self._conn.execute("ROLLBACK")
            check_identity(self._conn, self.path, self._identity)
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._commit()

    def _commit(self) -> None:
        try:
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as e:  # a full disk: SQLite rolls back, nothing is half-written
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise explain_sqlite_error(self.path, e, "write to") from None

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``, retried every few milliseconds for up to ``timeout_s``.

        SQLite's own busy handler backs off to one try per 100 ms, so a process that writes in a
        series of short transactions (a big scan) can starve another one past the timeout; short
        waits in a loop keep trying often enough to get in between."""
        deadline = time.monotonic() + self._timeout_s
        self._conn.execute(f"PRAGMA busy_timeout = {_POLL_MS}")
        try:
            while True:
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {int(self._timeout_s * 1000)}")

    def integrity_ok(self) -> bool:
        """``PRAGMA integrity_check`` says ok."""
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ classes
    def classes(self) -> list[str]:
        """Class names in id order; a class's index in this list is its ``class_id``."""
        return [r[0] for r in self._conn.execute("SELECT name FROM classes ORDER BY id")]

    def ensure_classes(self, names: Iterable[str]) -> dict[str, int]:
        """Add the names not yet known (ids are dense, starting at 0); return name → id for all.

        Names are compared NFC-normalised (a folder named on macOS arrives decomposed, "e" + U+0301,
        the same name typed in the app composed); a stored name that is not NFC is renamed to its
        NFC form in place, so its id, and every decision on it, stays."""
        with self._tx() as c:
            known = {r[0]: r[1] for r in c.execute("SELECT name, id FROM classes")}
            for old, cid in list(known.items()):
                new = unicodedata.normalize("NFC", old)
                if new != old and new not in known:
                    c.execute("UPDATE classes SET name = ? WHERE id = ?", (new, cid))
                    known[new] = known.pop(old)
            for name in (unicodedata.normalize("NFC", n) for n in names):
                if name not in known:
                    new_id = len(known)
                    c.execute("INSERT INTO classes(id, name) VALUES (?, ?)", (new_id, name))
                    known[name] = new_id
        return known

    # ------------------------------------------------------------------ images
    def upsert_images(self, rows: Sequence[dict[str, Any]], present_relpaths: Iterable[str]) -> None:
        """Insert or update scanned images by ``relpath``; images missing from the scan are
        marked not present (their rows and decisions are kept, so a file that comes back keeps
        its history).

        Written in transactions of :attr:`UPSERT_CHUNK` rows (one for a huge folder would hold
        the write lock for seconds, about 7 s for 200k rows on 2 cores, and another process's
        decision would wait that long); keyed by relpath, so the next scan completes a cut one.
        Every transaction bumps :meth:`images_version`."""
        present = set(present_relpaths)
        for start in range(0, len(rows), self.UPSERT_CHUNK):
            if start:
                time.sleep(0.005)  # a gap for writers waiting on the lock
            self._upsert_chunk(rows[start : start + self.UPSERT_CHUNK])
        with self._tx() as c:
            gone = [(r[0],) for r in c.execute("SELECT id, relpath FROM images WHERE present = 1") if r[1] not in present]
            c.executemany("UPDATE images SET present = 0 WHERE id = ?", gone)
            image_queries.bump_images_version(c)

    def _upsert_chunk(self, rows: Sequence[dict[str, Any]]) -> None:
        with self._tx() as c:
            image_queries.bump_images_version(c)
            c.executemany(
                """INSERT INTO images(relpath, sha256, size_bytes, mtime_ns, width, height, status, error,
                                      seed_class_id, present)
                   VALUES (:relpath, :sha256, :size_bytes, :mtime_ns, :width, :height, :status, :error,
                           :seed_class_id, 1)
                   ON CONFLICT(relpath) DO UPDATE SET sha256 = excluded.sha256,
                       size_bytes = excluded.size_bytes, mtime_ns = excluded.mtime_ns,
                       width = excluded.width, height = excluded.height, status = excluded.status,
                       error = excluded.error, seed_class_id = excluded.seed_class_id, present = 1""",
                rows,
            )

    def images(self, *, only_present: bool = True) -> list[ImageRow]:
        """All image rows ordered by id."""
        q = "SELECT * FROM images" + (" WHERE present = 1" if only_present else "") + " ORDER BY id"
        return [image_row(r) for r in self._conn.execute(q)]

    def images_version(self) -> int:
        """Writes to the image rows so far (what was derived from them holds while it is unchanged)."""
        return image_queries.images_version(self._conn)

    def usable_rows(self) -> list[tuple[int, str, str | None]]:
        """``(id, relpath, sha256)`` of the present images that decoded fine, by id."""
        return image_queries.usable_rows(self._conn)

    def present_counts(self) -> tuple[int, list[tuple[str, str]]]:
        """The number of present images and ``(relpath, error)`` of the unusable ones."""
        return image_queries.present_counts(self._conn)

    def known_image_ids(self, image_ids: Iterable[int]) -> set[int]:
        """The subset of ``image_ids`` that exist (present or not), without loading every row."""
        ids = sorted({int(i) for i in image_ids})
        found: set[int] = set()
        for s in range(0, len(ids), 900):  # stay under SQLite's bound-parameter limit
            chunk = ids[s : s + 900]
            q = f"SELECT id FROM images WHERE id IN ({','.join('?' * len(chunk))})"
            found.update(int(r[0]) for r in self._conn.execute(q, chunk))
        return found

    def image(self, image_id: int) -> ImageRow | None:
        """One image row by id (present or not), or None."""
        r = self._conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if r is None:
            return None
        return image_row(r)

    # ------------------------------------------------------------------ rounds
    def start_round(self, config: dict[str, Any]) -> int:
        """Record a new round with its config; returns its id (1, 2, ...)."""
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO rounds(started, config_json) VALUES (?, ?)",
                (time.time(), json.dumps(config, sort_keys=True)),
            )
            return int(cur.lastrowid or 0)

    def finish_round(self, round_id: int, metrics: dict[str, Any]) -> None:
        """Merge ``metrics`` into the round's metrics and mark it finished."""
        with self._tx() as c:
            row = c.execute("SELECT metrics_json FROM rounds WHERE id = ?", (round_id,)).fetchone()
            if row is None:
                raise KeyError(f"no round {round_id}")
            merged = {**json.loads(row[0]), **metrics}
            c.execute(
                "UPDATE rounds SET metrics_json = ?, finished = ? WHERE id = ?",
                (json.dumps(merged, sort_keys=True), time.time(), round_id),
            )

    def update_round_metrics(self, round_id: int, metrics: dict[str, Any]) -> None:
        """Merge ``metrics`` into a round without changing its finished time."""
        with self._tx() as c:
            row = c.execute("SELECT metrics_json FROM rounds WHERE id = ?", (round_id,)).fetchone()
            if row is None:
                raise KeyError(f"no round {round_id}")
            merged = {**json.loads(row[0]), **metrics}
            c.execute("UPDATE rounds SET metrics_json = ? WHERE id = ?", (json.dumps(merged, sort_keys=True), round_id))

    def rounds(self) -> list[RoundRow]:
        """All rounds, oldest first."""
        return [
            RoundRow(r["id"], r["started"], r["finished"], json.loads(r["config_json"]), json.loads(r["metrics_json"]))
            for r in self._conn.execute("SELECT * FROM rounds ORDER BY id")
        ]

    def last_finished_round(self) -> RoundRow | None:
        """The newest round that completed training, or None."""
        return next((r for r in reversed(self.rounds()) if r.finished is not None), None)

    # ------------------------------------------------------------------ suggestions
    def save_suggestions(self, round_id: int, rows: Sequence[StoredSuggestion]) -> None:
        """Replace the suggestions of ``round_id`` with ``rows``."""
        with self._tx() as c:
            c.execute("DELETE FROM suggestions WHERE round = ?", (round_id,))
            c.executemany(
                """INSERT INTO suggestions(round, image_id, class_id, confidence, source, rank, distance, evidence_json)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    (round_id, s.image_id, s.class_id, s.confidence, s.source, s.rank, s.distance,
                     json.dumps(list(s.evidence)))
                    for s in rows
                ],
            )

    def suggestions(self, round_id: int) -> list[StoredSuggestion]:
        """The suggestions of a round in rank order."""
        return [
            StoredSuggestion(r["round"], r["image_id"], r["class_id"], r["confidence"], r["source"], r["rank"],
                             r["distance"], tuple(json.loads(r["evidence_json"])))
            for r in self._conn.execute("SELECT * FROM suggestions WHERE round = ? ORDER BY rank", (round_id,))
        ]

    # ------------------------------------------------------------------ decisions
    def add_decisions(self, rows: Sequence[dict[str, Any]], actor: str | None = None) -> list[int]:
        """Append decisions as one batch (one transaction) written by ``actor``; returns their ids.

        Each row: ``image_id``, ``action`` (see :data:`labeltool.data.decisions.ACTIONS`), optional
        ``class_id``, ``round``, ``undoes``, ``confidence``. All rows share one new batch number.
        """
        for r in rows:
            if r["action"] not in ACTIONS:
                raise ValueError(f"unknown decision action {r['action']!r}; valid: {sorted(ACTIONS)}")
        with self._tx() as c:
            return decision_queries.insert_batch(c, rows, actor)

    def undo_last_batch(self, actor: str) -> list[int]:
        """Cancel the in-force decisions of ``actor``'s newest batch that still has one (rows
        without an actor, from older projects, count as anyone's), in one transaction so two
        undos never take back the same batch; returns the ids undone ([] if nothing)."""
        with self._tx() as c:
            target = decision_queries.newest_batch_in_force(c, actor)
            decision_queries.insert_batch(c, decision_queries.undo_rows_for(target), actor)
        return [i for i, _ in target]

    def decisions(self) -> list[Decision]:
        """The whole decision log, oldest first."""
        return [
            Decision(r["id"], r["image_id"], r["class_id"], r["action"], r["round"], r["batch"], r["undoes"],
                     r["confidence"], r["ts"], r["actor"])
            for r in self._conn.execute("SELECT * FROM decisions ORDER BY id")
        ]

    def label_state(self) -> LabelState:
        """Current labels and rejections from seeds and the decision log, the same as
        :func:`labeltool.data.decisions.replay` of :meth:`decisions`, read from the per-group table
        of :mod:`labeltool.data.label_groups` (its cost follows the project, not the log)."""
        version = self.images_version()  # the seeds change only with the image rows
        if self._seeds is None or self._seeds[0] != version:
            q = "SELECT id, seed_class_id FROM images WHERE seed_class_id IS NOT NULL AND status = 'ok'"
            self._seeds = (version, {int(r[0]): int(r[1]) for r in self._conn.execute(q)})
        return decision_queries.label_state(self._conn, self._seeds[1])

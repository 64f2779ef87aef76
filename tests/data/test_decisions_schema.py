"""Projects written before decisions carried their actor (schema 1) open, upgrade and undo."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from labeltool.data.decisions import replay
from labeltool.data.store import SCHEMA_VERSION, Store

# the tables of schema 1 that hold data (the others are created alike in both versions)
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE classes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE images (
    id INTEGER PRIMARY KEY, relpath TEXT NOT NULL UNIQUE, sha256 TEXT, size_bytes INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0, width INTEGER, height INTEGER, status TEXT NOT NULL, error TEXT,
    seed_class_id INTEGER REFERENCES classes(id), present INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id),
    class_id INTEGER REFERENCES classes(id),
    action TEXT NOT NULL,
    round INTEGER,
    batch INTEGER NOT NULL,
    undoes INTEGER REFERENCES decisions(id),
    confidence REAL,
    ts REAL NOT NULL
);
CREATE INDEX decisions_image ON decisions(image_id);
CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO classes VALUES (0, 'cat'), (1, 'dog');
INSERT INTO images(id, relpath, status, seed_class_id) VALUES (1, 'a.png', 'ok', 0), (2, 'b.png', 'ok', NULL),
    (3, 'c.png', 'ok', NULL);
INSERT INTO decisions(image_id, class_id, action, round, batch, undoes, confidence, ts) VALUES
    (2, 1, 'accept', 1, 1, NULL, 0.9, 1.0), (3, 1, 'accept', 1, 1, NULL, 0.8, 1.0),
    (1, 0, 'reject', 1, 2, NULL, NULL, 2.0), (1, NULL, 'undo', NULL, 3, 3, NULL, 3.0),
    (3, 0, 'assign', 1, 4, NULL, NULL, 4.0);
"""


def _schema_1_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript(SCHEMA_1)
    con.close()
    return path


def test_a_schema_1_project_is_upgraded_in_place_and_keeps_its_log(tmp_path: Path) -> None:
    db = _schema_1_db(tmp_path / "project.sqlite")
    with Store(db) as store:
        assert SCHEMA_VERSION == 2 and store.get_meta("schema_version") == "2"
        log = store.decisions()
        assert [d.actor for d in log] == [None] * 5 and [d.action for d in log][-1] == "assign"
        assert store.label_state() == replay({1: 0}, log)
        assert store.label_state().labels == {1: 0, 2: 1, 3: 0}
        indexes = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"decisions_batch", "decisions_actor_batch", "decisions_undoes", "decisions_state"} <= indexes
        # decisions without an actor are anyone's: the newest batch in force goes first
        assert store.undo_last_batch("new-session") == [5]
        mine = store.add_decisions([{"image_id": 2, "action": "unlabel"}], "new-session")
        assert store.undo_last_batch("someone-else") == [1, 2]  # not new-session's unlabel
        assert store.undo_last_batch("new-session") == mine
    with Store(db) as again:  # a second open finds nothing to upgrade and changes nothing
        assert again.get_meta("schema_version") == "2" and len(again.decisions()) == 10
        assert again._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_writers_opening_a_schema_1_project_at_once_upgrade_it_once(tmp_path: Path) -> None:
    db = _schema_1_db(tmp_path / "project.sqlite")
    first = Store(db)
    second = Store(db)  # sees the upgraded schema: no duplicate column, no error
    for store in (first, second):
        assert [r[1] for r in store._conn.execute("PRAGMA table_info(decisions)")].count("actor") == 1
        store.close()

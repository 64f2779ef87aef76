"""The decision log read in SQL: label state and undo without loading the whole log.

``decisions`` holds up to millions of rows; reading them all into Python took seconds per
``status`` and per undo. These queries go through the indexes of the table (``decisions_batch``,
``decisions_actor_batch``, ``decisions_undoes``, ``decisions_state``, created by :func:`upgrade`)
and the table ``decision_groups`` (:mod:`labeltool.data.label_groups`), and their
results are the same as :func:`labeltool.data.decisions.replay` and
:func:`labeltool.data.undo.undo_rows` give for the whole log (tests compare them).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from labeltool.data.decisions import LabelState, LastEvent, state_from_events
from labeltool.data.label_groups import NO_CLASS, TABLE, cancelled_among, newest_per_group

__all__ = ["insert_batch", "label_state", "newest_batch_in_force"]

_NO_BATCH = 2**62

_OWN_BATCH_BELOW = ("SELECT batch FROM decisions WHERE actor = ? AND action != 'undo' AND batch < ? "
                    "ORDER BY batch DESC LIMIT 1")
_ANYONES_BATCH_BELOW = ("SELECT batch FROM decisions WHERE actor IS NULL AND action != 'undo' AND batch < ? "
                        "ORDER BY batch DESC LIMIT 1")
_BATCH_ROWS = ("SELECT id, image_id FROM decisions WHERE batch = ? AND action != 'undo' "
               "AND (actor = ? OR actor IS NULL) ORDER BY id")


def label_state(conn: sqlite3.Connection, seeds: Mapping[int, int]) -> LabelState:
    """Labels and rejections from seed labels (image id → class id) and the log, as
    :func:`~labeltool.data.decisions.replay` gives them, from the newest in-force decision per
    (image, class, action) (:mod:`labeltool.data.label_groups`); decision rows are read only for
    the labels that stand."""
    events = (LastEvent(image_id, None if class_key == NO_CLASS else class_key, action, last_id)
              for (image_id, class_key, action), last_id in newest_per_group(conn).items())
    return state_from_events(seeds, events, lambda ids: _round_and_confidence(conn, ids))


def _round_and_confidence(conn: sqlite3.Connection, ids: list[int]) -> dict[int, tuple[int | None, float | None]]:
    q = "SELECT id, round, confidence FROM decisions WHERE id IN (SELECT value FROM json_each(?))"
    return {int(r[0]): (r[1], r[2]) for r in conn.execute(q, (json.dumps(ids),))}


def newest_batch_in_force(conn: sqlite3.Connection, actor: str) -> list[tuple[int, int]]:
    """``(decision id, image id)`` of the in-force decisions of the newest batch that ``actor``
    (or an older labeltool, which wrote no actor) recorded and that still has one; [] if none.

    Walks the actor's batches newest first through ``decisions_actor_batch``: the cost is a few
    index lookups per batch it steps over (the caller's batches already undone), whatever the
    length of the log."""
    below = _NO_BATCH
    while True:
        batch = _next_batch_below(conn, actor, below)
        if batch is None:
            return []
        rows = [(int(r[0]), int(r[1])) for r in conn.execute(_BATCH_ROWS, (batch, actor))]
        cancelled = cancelled_among(conn, [i for i, _ in rows])
        live = [(i, image) for i, image in rows if i not in cancelled]
        if live:
            return live
        below = batch


def _next_batch_below(conn: sqlite3.Connection, actor: str, below: int) -> int | None:
    found = [r[0] for q, p in ((_OWN_BATCH_BELOW, (actor, below)), (_ANYONES_BATCH_BELOW, (below,)))
             for r in conn.execute(q, p)]
    return max(found) if found else None


def insert_batch(conn: sqlite3.Connection, rows: Sequence[Mapping[str, Any]], actor: str | None) -> list[int]:
    """Insert ``rows`` as one new batch written by ``actor`` (inside the caller's transaction);
    returns their ids."""
    batch = int(conn.execute("SELECT COALESCE(MAX(batch), 0) + 1 FROM decisions").fetchone()[0])
    now = time.time()
    return [_insert(conn, r, batch, actor, now) for r in rows]


def _insert(conn: sqlite3.Connection, r: Mapping[str, Any], batch: int, actor: str | None, now: float) -> int:
    cur = conn.execute(
        """INSERT INTO decisions(image_id, class_id, action, round, batch, undoes, confidence, ts, actor)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (r["image_id"], r.get("class_id"), r["action"], r.get("round"), batch, r.get("undoes"),
         r.get("confidence"), now, actor),
    )
    return int(cur.lastrowid or 0)


def undo_rows_for(targets: Iterable[tuple[int, int]]) -> list[dict[str, Any]]:
    """The ``undo`` rows cancelling ``(decision id, image id)`` pairs."""
    return [{"image_id": image, "action": "undo", "undoes": i} for i, image in targets]


# ---------------------------------------------------------------------------- schema
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS decisions_batch ON decisions(batch)",
    "CREATE INDEX IF NOT EXISTS decisions_actor_batch ON decisions(actor, batch) WHERE action != 'undo'",
    "CREATE INDEX IF NOT EXISTS decisions_undoes ON decisions(undoes) WHERE action = 'undo'",
    "CREATE INDEX IF NOT EXISTS decisions_state ON decisions(image_id, class_id, action)",
)

_NAMES = (*(statement.split()[5] for statement in _INDEXES), "decision_groups")


def needs_upgrade(conn: sqlite3.Connection) -> bool:
    """Whether ``decisions`` lacks the ``actor`` column, one of its indexes or the table
    ``decision_groups`` (a project written before decisions carried their actor, schema 1)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(decisions)")}
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    return "actor" not in columns or not set(_NAMES) <= names


def upgrade(conn: sqlite3.Connection, schema_version: int) -> None:
    """Add the ``actor`` column (NULL for every existing row: undone by anyone's undo), the
    indexes and ``decision_groups`` (filled by the first read), and record ``schema_version``;
    inside the caller's write transaction, idempotent."""
    if "actor" not in {r[1] for r in conn.execute("PRAGMA table_info(decisions)")}:
        conn.execute("ALTER TABLE decisions ADD COLUMN actor TEXT")
    for statement in (*_INDEXES, TABLE):
        conn.execute(statement)
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(schema_version),))

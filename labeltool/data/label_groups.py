"""The newest in-force decision per (image, class, action), kept in the table ``decision_groups``.

That table is all the label state needs of the log (see
:func:`labeltool.data.decisions.state_from_events`), and its size is bounded by the project
(images x classes x actions), not by the log. It records up to which decision id it is folded
(meta ``decision_groups_upto``); a read folds the decisions added since, by any process: a new
decision raises its group's newest id, a new undo (or redo) recomputes the groups of the decisions
it changes, newest first down that group's index entries (each checked through the undo chains
below it, not the whole log's undos). A backlog over :data:`REBUILD_BACKLOG`
(a project upgraded from schema 1, rows added in bulk) is one pass over the index
``decisions_state`` instead. The result is saved when the write lock is free at once; a read-only
or busy database is answered all the same, just not saved.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from labeltool.data.decisions import cancelled_by

__all__ = ["REBUILD_BACKLOG", "TABLE", "GroupKey", "newest_per_group"]

REBUILD_BACKLOG = 20_000
NO_CLASS = -1  # class key of decisions without a class (an unlabel)
GroupKey = tuple[int, int, str]  # image id, class id (NO_CLASS for none), action

TABLE = """CREATE TABLE IF NOT EXISTS decision_groups (
    image_id INTEGER NOT NULL, class_key INTEGER NOT NULL, action TEXT NOT NULL, last_id INTEGER NOT NULL,
    PRIMARY KEY (image_id, class_key, action)
) WITHOUT ROWID"""
_UPTO = "decision_groups_upto"

_SCAN = """
SELECT image_id, COALESCE(class_id, -1), action, MAX(id) FROM decisions
WHERE action != 'undo' AND id NOT IN (SELECT value FROM json_each(?))
GROUP BY image_id, class_id, action
"""
# every undo below the given decision ids, down the chains of undo-of-undo
_UNDO_CHAINS = """
WITH RECURSIVE chain(id, undoes) AS (
    SELECT id, undoes FROM decisions WHERE action = 'undo' AND undoes IN (SELECT value FROM json_each(?))
    UNION
    SELECT d.id, d.undoes FROM decisions d JOIN chain ON d.undoes = chain.id WHERE d.action = 'undo'
)
SELECT id, undoes FROM chain
"""
_GROUP_NEWEST_FIRST = ("SELECT id FROM decisions WHERE image_id = ? AND class_id IS ? AND action = ? "
                       "ORDER BY id DESC")


def newest_per_group(conn: sqlite3.Connection) -> dict[GroupKey, int]:
    """(image id, class key, action) → id of the newest in-force decision of that group."""
    own_tx = not conn.in_transaction
    if own_tx:
        conn.execute("BEGIN")  # one snapshot of the table and of the decisions after it
    try:
        upto = _upto(conn)
        new = conn.execute("SELECT id, image_id, class_id, action, undoes FROM decisions WHERE id > ? "
                           "ORDER BY id LIMIT ?", (upto, REBUILD_BACKLOG + 1)).fetchall()
        rebuild = len(new) > REBUILD_BACKLOG
        groups = _scan(conn) if rebuild else _stored(conn)
        changed = set(groups) if rebuild else _fold(conn, groups, new)
        top = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0]) if rebuild else \
            (int(new[-1][0]) if new else upto)
    finally:
        if own_tx:
            conn.execute("COMMIT")
    if new and own_tx:
        _save(conn, groups, changed, upto, top, rebuild)
    return groups


def _upto(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_UPTO,)).fetchone()
    return int(row[0]) if row else 0


def _stored(conn: sqlite3.Connection) -> dict[GroupKey, int]:
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: tens of thousands of rows on every read
    return {(image_id, class_key, action): last_id for image_id, class_key, action, last_id
            in cur.execute("SELECT image_id, class_key, action, last_id FROM decision_groups")}


def _cancelled(conn: sqlite3.Connection) -> set[int]:
    undos = conn.execute("SELECT id, undoes FROM decisions WHERE action = 'undo'").fetchall()
    return cancelled_by((int(u), None if t is None else int(t)) for u, t in undos)


def cancelled_among(conn: sqlite3.Connection, ids: list[int]) -> set[int]:
    """Which of ``ids`` an in-force undo cancels, from the undo chains below them alone."""
    chains = conn.execute(_UNDO_CHAINS, (json.dumps(ids),)).fetchall()
    return cancelled_by((int(u), None if t is None else int(t)) for u, t in chains)


def _scan(conn: sqlite3.Connection) -> dict[GroupKey, int]:
    shown = json.dumps(sorted(_cancelled(conn)))
    return {(int(r[0]), int(r[1]), str(r[2])): int(r[3]) for r in conn.execute(_SCAN, (shown,))}


def _fold(conn: sqlite3.Connection, groups: dict[GroupKey, int], new: Iterable[sqlite3.Row]) -> set[GroupKey]:
    """Fold decisions ``(id, image id, class id, action, undoes)`` into ``groups``; returns the
    keys whose entry changed (an absent key: the group has no decision in force any more)."""
    changed: set[GroupKey] = set()
    undone: list[int] = []
    for did, image_id, class_id, action, undoes in new:
        if action == "undo":
            if undoes is not None:
                undone.append(int(undoes))
            continue
        key = (int(image_id), NO_CLASS if class_id is None else int(class_id), str(action))
        if did > groups.get(key, 0):
            groups[key] = did
            changed.add(key)
    for key in _groups_below(conn, undone):
        newest = next((i for (i,) in conn.execute(_GROUP_NEWEST_FIRST, _key_params(key)).fetchall()
                       if i not in cancelled_among(conn, [i])), None)
        if newest is None:
            groups.pop(key, None)
        else:
            groups[key] = newest
        changed.add(key)
    return changed


def _key_params(key: GroupKey) -> tuple[int, int | None, str]:
    image_id, class_key, action = key
    return image_id, None if class_key == NO_CLASS else class_key, action


def _groups_below(conn: sqlite3.Connection, targets: Iterable[int]) -> set[GroupKey]:
    """The groups of the decisions at the end of each target's chain of undo-of-undo."""
    keys: set[GroupKey] = set()
    for target in targets:
        seen: set[int] = set()
        at: int | None = target
        while at is not None and at not in seen:
            seen.add(at)
            row = conn.execute("SELECT image_id, class_id, action, undoes FROM decisions WHERE id = ?", (at,)).fetchone()
            if row is None:
                break
            if row[2] != "undo":
                keys.add((int(row[0]), NO_CLASS if row[1] is None else int(row[1]), str(row[2])))
                break
            at = row[3]
    return keys


def _save(conn: sqlite3.Connection, groups: dict[GroupKey, int], changed: set[GroupKey], upto: int, top: int,
          rebuild: bool) -> None:
    """Write the changed groups and the new fold point, if the write lock is free now and no
    other process saved meanwhile; otherwise leave it to a later read."""
    wait_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("BEGIN IMMEDIATE")
        if _upto(conn) == upto:
            if rebuild:
                conn.execute("DELETE FROM decision_groups")
            conn.executemany("INSERT OR REPLACE INTO decision_groups VALUES (?, ?, ?, ?)",
                             [(*k, groups[k]) for k in changed if k in groups])
            conn.executemany("DELETE FROM decision_groups WHERE image_id = ? AND class_key = ? AND action = ?",
                             [k for k in changed if k not in groups])
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (_UPTO, str(top)))
        conn.execute("COMMIT")
    except sqlite3.Error:  # busy, read-only, full: the answer stands, the table catches up later
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {wait_ms}")

"""Undo as a new decision: which decisions the newest batch still in force holds.

Undo is per writer: every session carries an actor id, stored with each decision it records,
and its undo takes back only its own newest batch still in force, never a newer one written by
another process or browser session. Decisions recorded before decisions carried an actor (a
project of schema 1, upgraded when opened) have none and count as anyone's. The store finds the
batch with indexed queries (:func:`labeltool.data.decision_queries.newest_batch_in_force`);
:func:`undo_rows` is the same rule over a log in memory.
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

from labeltool.data.decisions import Decision, cancelled_ids

__all__ = ["ACTOR_ENV", "command_line_actor", "new_actor", "undo_rows"]

ACTOR_ENV = "LABELTOOL_ACTOR"


def undo_rows(log: Sequence[Decision], actor: str | None = None) -> tuple[list[int], list[dict[str, Any]]]:
    """The ids of the in-force decisions of the newest batch that still has one, and the
    ``undo`` rows that cancel them (empty lists when there is nothing to undo). With ``actor``,
    only batches that actor wrote (or that carry no actor) are candidates."""
    cancelled = cancelled_ids(log)
    by_batch: dict[int, list[int]] = {}
    for d in log:
        if d.action != "undo" and d.id not in cancelled and (actor is None or d.actor in (actor, None)):
            by_batch.setdefault(d.batch, []).append(d.id)
    if not by_batch:
        return [], []
    target = by_batch[max(by_batch)]
    image_of = {d.id: d.image_id for d in log}
    return target, [{"image_id": image_of[i], "action": "undo", "undoes": i} for i in target]


def new_actor() -> str:
    """A fresh actor id for one session (an app tab, a script): ``session-`` + 12 hex digits."""
    return f"session-{uuid.uuid4().hex[:12]}"


def command_line_actor() -> str:
    """The actor of command-line runs: ``$LABELTOOL_ACTOR`` when set, else ``cli:USER@HOST``, so
    ``labeltool review --undo`` takes back what the same user's last command recorded (each
    command is a process of its own) and not what an app session recorded meanwhile."""
    given = os.environ.get(ACTOR_ENV, "").strip()
    if given:
        return given
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return f"cli:{user}@{socket.gethostname()}"

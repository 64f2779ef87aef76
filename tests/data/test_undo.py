"""Tests for labeltool.data.undo: undo cancels the newest batch still in force."""

from __future__ import annotations

from labeltool.data.decisions import Decision
from labeltool.data.undo import undo_rows


def d(i: int, image: int, action: str, batch: int, undoes: int | None = None) -> Decision:
    return Decision(i, image, 0 if action not in ("undo", "unlabel") else None, action, 1, batch, undoes, None, 0.0)


def test_undo_takes_the_newest_batch_in_force_and_skips_undone_ones() -> None:
    log = [d(1, 10, "accept", 1), d(2, 11, "accept", 1), d(3, 12, "assign", 2)]
    assert undo_rows(log) == ([3], [{"image_id": 12, "action": "undo", "undoes": 3}])
    log.append(d(4, 12, "undo", 3, undoes=3))  # batch 2 undone: batch 1 is next
    target, rows = undo_rows(log)
    assert target == [1, 2] and [r["image_id"] for r in rows] == [10, 11]
    log += [d(5, 10, "undo", 4, undoes=1), d(6, 11, "undo", 4, undoes=2)]
    assert undo_rows(log) == ([], [])
    assert undo_rows([]) == ([], [])

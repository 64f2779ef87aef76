"""Undo as a new decision: which decisions the newest batch still in force holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from labeltool.data.decisions import Decision, cancelled_ids

__all__ = ["undo_rows"]


def undo_rows(log: Sequence[Decision]) -> tuple[list[int], list[dict[str, Any]]]:
    """The ids of the in-force decisions of the newest batch that still has one, and the
    ``undo`` rows that cancel them (empty lists when there is nothing to undo)."""
    cancelled = cancelled_ids(log)
    by_batch: dict[int, list[int]] = {}
    for d in log:
        if d.action != "undo" and d.id not in cancelled:
            by_batch.setdefault(d.batch, []).append(d.id)
    if not by_batch:
        return [], []
    target = by_batch[max(by_batch)]
    image_of = {d.id: d.image_id for d in log}
    return target, [{"image_id": image_of[i], "action": "undo", "undoes": i} for i in target]

"""Which labels a person verified: the anchors the stated precision is checked against.

A label counts as verified when it is a seed label (the image's class sub-folder), a label set
by hand (``assign``), or a suggestion accepted or corrected in a round where the reviewer
corrected or rejected at least one suggestion, proof that the round's suggestions were looked
at. Labels accepted in rounds without a single rejection, and unattended ``pseudo`` labels, are
not: a reviewer who accepts everything would otherwise vouch for the tool with its own output.
"""

from __future__ import annotations

from collections.abc import Iterable

from labeltool.data.decisions import LABELING_ACTIONS, Decision, LabelState, cancelled_ids

__all__ = ["round_reviews", "verified_images"]


def round_reviews(log: Iterable[Decision]) -> dict[int, tuple[int, int]]:
    """``round → (accepted, rejected)`` suggestions of every round in which the reviewer rejected or
    corrected something (a correction also logs a reject of the suggested class); undone
    decisions do not count."""
    decisions = list(log)
    cancelled = cancelled_ids(decisions)
    counts: dict[int, list[int]] = {}
    for d in decisions:
        if d.round is None or d.id in cancelled or d.action not in ("accept", "reject"):
            continue
        counts.setdefault(d.round, [0, 0])[d.action == "reject"] += 1
    return {r: (a, n) for r, (a, n) in counts.items() if n > 0}


def verified_images(state: LabelState, log: Iterable[Decision]) -> set[int]:
    """Ids of the currently labeled images whose label a person verified (module docstring)."""
    decisions = sorted(log, key=lambda d: d.id)
    cancelled = cancelled_ids(decisions)
    looked_at: set[int] = set()
    last: dict[int, Decision] = {}
    for d in decisions:
        if d.action == "undo" or d.id in cancelled:
            continue
        if d.action in ("reject", "relabel") and d.round is not None:
            looked_at.add(d.round)
        if d.action in LABELING_ACTIONS or d.action == "unlabel":
            last[d.image_id] = d
    out = set()
    for image_id, class_id in state.labels.items():
        newest = last.get(image_id)
        if newest is None:
            if state.source.get(image_id) == "seed":
                out.add(image_id)
            continue
        if newest.class_id != class_id:
            continue
        if newest.action == "assign" or (newest.action in ("accept", "relabel") and newest.round in looked_at):
            out.add(image_id)
    return out

"""Decision log semantics: what an append-only list of decisions means for each image.

Actions:
- ``accept``   the reviewer confirmed the suggested class (label := class_id)
- ``relabel``  the suggestion was wrong; the reviewer gave the correct class (label := class_id,
               and (image, suggested class) is also recorded as a separate ``reject``)
- ``assign``   a label set by hand, with no suggestion involved (label := class_id)
- ``pseudo``   accepted without review by unattended self-training (label := class_id)
- ``unlabel``  the image goes back to the unlabeled pool (label := none, seed included)
- ``reject``   (image, class_id) is wrong; it is never suggested again; the label is unchanged
               unless it was that class, in which case the image becomes unlabeled
- ``undo``     cancels decision ``undoes`` (which may itself be an undo: that is a redo)

The state is a pure function of the seed labels and the log (:func:`replay`), so reopening a
project always restores exactly the same labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

LABELING_ACTIONS = frozenset({"accept", "relabel", "assign", "pseudo"})
ACTIONS = LABELING_ACTIONS | {"unlabel", "reject", "undo"}
REVIEWED_ACTIONS = frozenset({"accept", "relabel", "assign"})


@dataclass(frozen=True)
class Decision:
    """One row of the append-only decision log."""

    id: int
    image_id: int
    class_id: int | None
    action: str
    round: int | None
    batch: int
    undoes: int | None
    confidence: float | None
    ts: float


@dataclass
class LabelState:
    """Labels derived from seeds + decisions.

    ``labels`` maps image id → class id for every labeled image; ``source`` says where each
    label came from (``seed``, ``reviewed`` or ``pseudo``) and ``decided_in`` the round of the
    deciding decision (None for seeds); ``rejected`` holds the (image id, class id) pairs never
    to suggest again; ``effective`` the ids of decisions that are in force (not undone).
    """

    labels: dict[int, int] = field(default_factory=dict)
    source: dict[int, str] = field(default_factory=dict)
    decided_in: dict[int, int | None] = field(default_factory=dict)
    confidence: dict[int, float | None] = field(default_factory=dict)
    rejected: set[tuple[int, int]] = field(default_factory=set)
    effective: set[int] = field(default_factory=set)


def cancelled_ids(decisions: Iterable[Decision]) -> set[int]:
    """Ids of decisions cancelled by an (itself not cancelled) undo."""
    ordered = sorted(decisions, key=lambda d: d.id, reverse=True)
    cancelled: set[int] = set()
    for d in ordered:  # newest first: whether an undo is itself undone is already known
        if d.action == "undo" and d.id not in cancelled and d.undoes is not None:
            cancelled.add(d.undoes)
    return cancelled


def replay(seeds: Mapping[int, int], decisions: Iterable[Decision]) -> LabelState:
    """Current state from seed labels (image id → class id) and the decision log."""
    log = sorted(decisions, key=lambda d: d.id)
    cancelled = cancelled_ids(log)
    state = LabelState()
    for image_id, class_id in seeds.items():
        state.labels[image_id] = class_id
        state.source[image_id] = "seed"
        state.decided_in[image_id] = None
        state.confidence[image_id] = None
    for d in log:
        if d.action == "undo" or d.id in cancelled:
            continue
        state.effective.add(d.id)
        if d.action in LABELING_ACTIONS and d.class_id is not None:
            state.labels[d.image_id] = d.class_id
            state.source[d.image_id] = "pseudo" if d.action == "pseudo" else "reviewed"
            state.decided_in[d.image_id] = d.round
            state.confidence[d.image_id] = d.confidence
            state.rejected.discard((d.image_id, d.class_id))
        elif d.action == "unlabel":
            _drop(state, d.image_id)
        elif d.action == "reject" and d.class_id is not None:
            state.rejected.add((d.image_id, d.class_id))
            if state.labels.get(d.image_id) == d.class_id:
                _drop(state, d.image_id)
    return state


def _drop(state: LabelState, image_id: int) -> None:
    for table in (state.labels, state.source, state.decided_in, state.confidence):
        table.pop(image_id, None)

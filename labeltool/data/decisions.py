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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["ACTIONS", "LABELING_ACTIONS", "REVIEWED_ACTIONS", "Decision", "LabelState", "LastEvent", "cancelled_by", "cancelled_ids", "replay",
           "state_from_events"]

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
    actor: str | None = None  # the session that wrote it; None in logs older than actors


@dataclass
class LabelState:
    """Labels derived from seeds + decisions.

    ``labels`` maps image id → class id for every labeled image; ``source`` says where each
    label came from (``seed``, ``reviewed`` or ``pseudo``) and ``decided_in`` the round of the
    deciding decision (None for seeds); ``rejected`` holds the (image id, class id) pairs never
    to suggest again.
    """

    labels: dict[int, int] = field(default_factory=dict)
    source: dict[int, str] = field(default_factory=dict)
    decided_in: dict[int, int | None] = field(default_factory=dict)
    confidence: dict[int, float | None] = field(default_factory=dict)
    rejected: set[tuple[int, int]] = field(default_factory=set)


def cancelled_ids(decisions: Iterable[Decision]) -> set[int]:
    """Ids of decisions cancelled by an (itself not cancelled) undo."""
    return cancelled_by((d.id, d.undoes) for d in decisions if d.action == "undo")


def cancelled_by(undos: Iterable[tuple[int, int | None]]) -> set[int]:
    """Ids cancelled by an in-force undo, from ``(undo id, undoes)`` pairs.

    Whether an undo is in force depends only on the undos that target it, directly or down a
    chain, so the pairs may be every undo of the log or just the undo chains below some ids."""
    cancelled: set[int] = set()
    for undo_id, target in sorted(undos, reverse=True):  # newest first: an undo's own fate is known
        if undo_id not in cancelled and target is not None:
            cancelled.add(target)
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


@dataclass(frozen=True)
class LastEvent:
    """The newest in-force decision of one action on one (image, class): all :func:`replay`
    needs of a log, besides the round and confidence of the decisions that set a label."""

    image_id: int
    class_id: int | None
    action: str
    id: int


Details = Callable[[list[int]], Mapping[int, tuple[int | None, float | None]]]


def state_from_events(seeds: Mapping[int, int], events: Iterable[LastEvent], details: Details) -> LabelState:
    """The state :func:`replay` reaches, from the newest in-force decision per (image, class,
    action); ``details(ids)`` gives the ``(round, confidence)`` of the decisions whose label stands.

    An image's label comes from its newest labeling action or ``unlabel`` (its seed when it has
    neither) and goes when a newer ``reject`` names that class; a pair (image, class) is
    rejected when its newest ``reject`` is newer than its newest labeling action."""
    state = replay(seeds, ())
    label_event: dict[int, LastEvent] = {}
    last_set: dict[tuple[int, int], int] = {}
    last_reject: dict[tuple[int, int], int] = {}
    for e in events:
        if e.action == "unlabel":
            pass
        elif e.class_id is None or e.action not in LABELING_ACTIONS | {"reject"}:
            continue
        elif e.action == "reject":
            last_reject[(e.image_id, e.class_id)] = max(e.id, last_reject.get((e.image_id, e.class_id), 0))
            continue
        else:
            last_set[(e.image_id, e.class_id)] = max(e.id, last_set.get((e.image_id, e.class_id), 0))
        if e.image_id not in label_event or e.id > label_event[e.image_id].id:
            label_event[e.image_id] = e
    standing = details([e.id for e in label_event.values() if e.action != "unlabel"])
    for image_id, e in label_event.items():
        if e.action == "unlabel" or e.class_id is None:
            _drop(state, image_id)
            continue
        state.labels[image_id] = e.class_id
        state.source[image_id] = "pseudo" if e.action == "pseudo" else "reviewed"
        state.decided_in[image_id], state.confidence[image_id] = standing[e.id]
    state.rejected = {pair for pair, rid in last_reject.items() if rid > last_set.get(pair, 0)}
    for image_id, class_id in list(state.labels.items()):
        since = label_event[image_id].id if image_id in label_event else 0
        if last_reject.get((image_id, class_id), 0) > since:
            _drop(state, image_id)
    return state


def _drop(state: LabelState, image_id: int) -> None:
    for table in (state.labels, state.source, state.decided_in, state.confidence):
        table.pop(image_id, None)

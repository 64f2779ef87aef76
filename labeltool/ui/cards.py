"""Buttons and image cards as data: what each shows, which session method it calls with which
arguments, and the message it leaves. The app renders them as they are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

from labeltool.suggest.propose import Suggestion
from labeltool.ui.queue import Disputed


@dataclass(frozen=True)
class Button:
    """One button.

    ``action`` names the session method it calls with ``args`` (or ``state`` is the app-state
    update it makes instead). ``ok``: the message after it ran, ``{n}`` standing for the number
    of decisions written; ``empty``: the message when it wrote none. ``refresh``: the whole app
    reruns afterwards (the sidebar counts change)."""

    key: str
    label: str = ""
    action: str | None = None
    args: tuple[Any, ...] = ()
    ok: str | None = None
    empty: str | None = None
    icon: str | None = None
    help: str | None = None
    primary: bool = False
    disabled: bool = False
    refresh: bool = False
    state: Mapping[str, Any] | None = None

    def message(self, result: Any) -> str | None:
        """The message to show after the action returned ``result`` (None: none)."""
        n = len(result) if isinstance(result, Sized) else 0
        if n == 0 and self.empty is not None:
            return self.empty
        return self.ok.format(n=n) if self.ok is not None else None


@dataclass(frozen=True)
class Card:
    """A thumbnail with a line of markdown and its buttons (side by side when ``inline``)."""

    image_id: int
    text: str
    buttons: tuple[Button, ...]
    inline: bool = False


def batch_buttons(shown: Sequence[Suggestion]) -> tuple[Button, ...]:
    """Accept all shown, reject all shown, undo the newest click or batch."""
    n = len(shown)
    return (
        Button("accept_all", f"Accept all shown ({n})", "accept", (list(shown),), "Accepted {n} suggestions",
               primary=True, disabled=not shown, refresh=True),
        Button("reject_all", f"Reject all shown ({n})", "reject_many", ([(s.image_id, s.class_id) for s in shown],),
               "Rejected {n} suggestions", disabled=not shown, refresh=True),
        Button("undo", "Undo last action", "undo", (), "Undid {n} decision(s)", "Nothing to undo",
               help="Undo the newest click or batch", refresh=True),
    )


def suggestion_card(s: Suggestion, classes: Sequence[str]) -> Card:
    """A suggestion's class and confidence, with accept, reject and evidence buttons."""
    return Card(s.image_id, f"**{classes[s.class_id]}** · {s.confidence:.2f}", (
        Button(f"acc_{s.image_id}", action="accept", args=([s],), icon=":material/check:", help="Accept"),
        Button(f"rej_{s.image_id}", action="reject", args=(s.image_id, s.class_id), icon=":material/close:",
               help="Reject"),
        Button(f"ev_{s.image_id}", icon=":material/search:", help="Evidence (nearest labeled images) and another class",
               state={"evidence_for": s.image_id}),
    ), inline=True)


def dispute_card(d: Disputed, classes: Sequence[str]) -> Card:
    """A disputed label with what its neighbours say, and buttons to follow them or unlabel it."""
    voted = classes[d.voted]
    return Card(d.image_id, f"**{classes[d.label]}** · neighbours: {voted} ({d.share:.0%})", (
        Button(f"dfix_{d.image_id}", f"→ {voted}", "assign", (d.image_id, voted), f"Image {d.image_id} relabeled"),
        Button(f"dun_{d.image_id}", "Unlabel", "unlabel", (d.image_id,), f"Image {d.image_id} unlabeled"),
    ))

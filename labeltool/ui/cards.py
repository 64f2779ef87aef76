"""Buttons and image cards as data: what each shows, which session method it calls with which
arguments, and the message it leaves. The app renders them as they are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

from labeltool.suggest.propose import Suggestion
from labeltool.ui.queue import Disputed

HOLD = "review_hold"  # app-state key of the review page's held layout (None: lay the page out afresh)


@dataclass(frozen=True)
class Button:
    """One button.

    ``action`` names the session method it calls with ``args`` (or ``state`` is the app-state
    update it makes instead). ``ok``: the message after it ran, ``{n}`` standing for the number
    of decisions written; ``empty``: the message when it wrote none. ``refresh``: the whole app
    reruns afterwards (the sidebar counts change). ``after``: app-state update made once the
    action succeeded; ``offers_undo``: its message comes with an Undo button."""

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
    after: Mapping[str, Any] | None = None
    offers_undo: bool = False

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


def batch_buttons(shown: Sequence[Suggestion], held: int = 0) -> tuple[Button, ...]:
    """Accept all shown, reject all shown, undo the newest click or batch; with ``held`` cards
    decided one by one on the page, a button that lays the page out afresh without them."""
    n = len(shown)
    fresh = {HOLD: None}
    out: tuple[Button, ...] = (
        Button("accept_all", f"Accept all shown ({n})", "accept", (list(shown),), "Accepted {n} suggestions",
               primary=True, disabled=not shown, refresh=True, after=fresh),
        Button("reject_all", f"Reject all shown ({n})", "reject_many", ([(s.image_id, s.class_id) for s in shown],),
               "Rejected {n} suggestions", disabled=not shown, refresh=True, after=fresh),
        undo_button("undo", "Undo last action"),
    )
    if held:
        out += (Button("next_cards", f"Show the next suggestions ({held} decided)", state=fresh,
                       help="Fill the page again, without the cards decided one by one"),)
    return out


def undo_button(key: str, label: str = "Undo") -> Button:
    """Undo the newest click or batch (the page is laid out afresh after it)."""
    return Button(key, label, "undo", (), "Undid {n} decision(s)", "Nothing to undo",
                  help="Undo the newest click or batch", refresh=True, after={HOLD: None})


def suggestion_card(s: Suggestion, classes: Sequence[str], name: str) -> Card:
    """A suggestion's class and confidence, with Accept, Reject and Evidence buttons.

    ``name``: the image's file name, for the message a reject leaves. A decided card stays on the
    page (see :func:`decided_card`) until the page is laid out again."""
    label = classes[s.class_id]
    return Card(s.image_id, f"**{label}** · {s.confidence:.2f}", (
        Button(f"acc_{s.image_id}", "Accept", "accept", ([s],), help=f"Label {name} as {label}", refresh=True),
        Button(f"rej_{s.image_id}", "Reject", "reject", (s.image_id, s.class_id), f"Rejected **{label}** for `{name}`",
               help=f"{name} is not {label}", refresh=True, offers_undo=True),
        Button(f"ev_{s.image_id}", "Evidence", help="Its nearest labeled images, and another class to assign",
               state={"evidence_for": s.image_id}),
    ))


def decided_card(s: Suggestion, classes: Sequence[str], mark: str) -> Card:
    """A suggestion decided on this page, kept in its place and height: its line greyed and struck
    through, its buttons disabled, the one that decided it saying ``Accepted`` or ``Rejected``."""
    labels = {"accepted": ("Accepted", "Reject"), "rejected": ("Accept", "Rejected")}.get(mark, ("Accept", "Reject"))
    return Card(s.image_id, f":gray[~~{classes[s.class_id]}~~ · {s.confidence:.2f}]", (
        Button(f"acc_{s.image_id}", labels[0], disabled=True, icon=":material/check:" if mark == "accepted" else None),
        Button(f"rej_{s.image_id}", labels[1], disabled=True, icon=":material/close:" if mark == "rejected" else None),
        Button(f"ev_{s.image_id}", "Evidence", disabled=True),
    ))


def dispute_card(d: Disputed, classes: Sequence[str]) -> Card:
    """A disputed label with what its neighbours say, and buttons to follow them or unlabel it."""
    voted = classes[d.voted]
    return Card(d.image_id, f"**{classes[d.label]}** · neighbours: {voted} ({d.share:.0%})", (
        Button(f"dfix_{d.image_id}", f"→ {voted}", "assign", (d.image_id, voted), f"Image {d.image_id} relabeled"),
        Button(f"dun_{d.image_id}", "Unlabel", "unlabel", (d.image_id,), f"Image {d.image_id} unlabeled"),
    ))

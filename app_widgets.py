"""Generic renderers for app.py: they turn the session's view models into Streamlit widgets.

Nothing here knows the domain: a Control, Button or Card is rendered from its fields, and every call that
may fail runs through the ``attempt`` of the session it is handed, so its error is shown, not raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import streamlit as st

CARDS = 6  # thumbnails per row
ss = st.session_state


class Outcome(Protocol):
    """What ``attempt`` returns: the call's result, or the message of its error."""

    @property
    def result(self) -> Any: ...
    @property
    def error(self) -> str | None: ...


class Session(Protocol):
    """The part of the session the renderers use; a Button's ``action`` names one of its methods."""

    @staticmethod
    def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome: ...
    def thumbnail(self, image_id: int) -> Path: ...
    def stats(self) -> dict[str, Any]: ...


class Control(Protocol):
    """One setting: its widget ``kind`` and the fields that widget takes."""

    @property
    def key(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def help(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def default(self) -> Any: ...
    @property
    def choices(self) -> Sequence[Any]: ...
    @property
    def index(self) -> int: ...
    @property
    def low(self) -> float | None: ...
    @property
    def high(self) -> float | None: ...
    @property
    def step(self) -> float | None: ...
    @property
    def fmt(self) -> str | None: ...
    def shown(self, values: Mapping[str, Any]) -> bool: ...
    def enabled(self, values: Mapping[str, Any]) -> bool: ...


class Button(Protocol):
    """A button that calls the session method ``action`` with ``args``, or updates the app ``state``."""

    @property
    def key(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def icon(self) -> str | None: ...
    @property
    def help(self) -> str | None: ...
    @property
    def disabled(self) -> bool: ...
    @property
    def primary(self) -> bool: ...
    @property
    def refresh(self) -> bool: ...
    @property
    def state(self) -> Mapping[str, Any] | None: ...
    @property
    def action(self) -> str | None: ...
    @property
    def args(self) -> tuple[Any, ...]: ...
    @property
    def after(self) -> Mapping[str, Any] | None: ...
    @property
    def offers_undo(self) -> bool: ...
    def message(self, result: Any) -> str | None: ...


class Card(Protocol):
    """An image card: thumbnail, markdown text and buttons (in a row when ``inline``)."""

    @property
    def image_id(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def inline(self) -> bool: ...
    @property
    def buttons(self) -> Sequence[Button]: ...


# ---------------------------------------------------------------------------- state
def bump() -> None:
    """Something was written: cached counts are stale."""
    ss.version = ss.get("version", 0) + 1


def act(session: Session, fn: Callable[..., Any], *args: Any, ok: str | Callable[[Any], str | None] | None = None,
        app: bool = False, after: Mapping[str, Any] | None = None, undo: bool = False) -> None:
    """Widget callback: run a session write and leave a message for the next run (with an Undo
    button when ``undo``); ``after``: app-state update made when the write succeeded."""
    out = session.attempt(fn, *args)
    text = out.error or (ok(out.result) if callable(ok) else ok)
    ss.flash = ("error" if out.error else "success", text) if text else None
    ss.flash_undo = undo and out.error is None
    if out.error is None:
        bump()
        ss.update(after or {})
        ss.rerun_app = app or ss.get("rerun_app", False)


def stats(session: Session) -> dict[str, Any]:
    """The session's counts, recomputed only after a write (a full count reads every image row)."""
    key = (ss.get("folder"), ss.get("version", 0))
    if ss.get("stats_key") != key:
        ss.stats, ss.stats_key = session.stats(), key
    return dict(ss.stats)


def kept(name: str, key: Any) -> Any:
    """What the page kept in the app state under ``name`` as ``(key, value)``: the value while
    ``key`` is unchanged, else None."""
    held = ss.get(name)
    return held[1] if held and held[0] == key else None


def tab_button(label: str, tab: str, primary: bool = False) -> None:
    """A button that opens the tab ``tab`` (the tabs' widget key is ``tab``); from inside a
    fragment too: the whole app reruns, so the tabs show the new one."""
    st.button(label, key=f"go_{tab.lower()}", type="primary" if primary else "secondary", on_click=ss.update,
              kwargs={"tab": tab, "rerun_app": True})


def show_flash(session: Session | None = None, undo: Button | None = None, idle: str | None = None) -> None:
    """The message the last callback left, shown once, with the ``undo`` button beside it when it
    offered one. With ``idle`` (the line shown while there is no message) the message has a slot
    of fixed height, so what is below it never moves when a message comes or goes."""
    slot = st.container(height=58, border=False, vertical_alignment="center") if idle is not None else st.container()
    if not ss.get("flash"):
        if idle:
            slot.caption(idle)
        return
    kind, text = ss.flash
    with_undo = undo is not None and session is not None and ss.get("flash_undo")
    text_col, side = slot.columns([6, 1], vertical_alignment="center") if with_undo else (slot, None)
    if idle is not None:  # one line, no box: it fits the slot
        text_col.markdown(f":{'red' if kind == 'error' else 'green'}[{'✗' if kind == 'error' else '✓'}] {text}")
    else:
        (text_col.error if kind == "error" else text_col.success)(text)
    if side is not None and undo is not None and session is not None:
        with side:
            button(session, undo)
    ss.flash, ss.flash_undo = None, False


# ---------------------------------------------------------------------------- renderers
def notes(items: Iterable[tuple[str, str, float | None]]) -> None:
    """``(kind, markdown, value)`` rows: a ``meter`` is a progress bar at ``value``, a ``warning``
    a warning box, anything else an info box."""
    for kind, text, value in items:
        if kind == "meter":
            st.progress(value or 0.0, text=text)
        elif kind == "warning":
            st.warning(text)
        else:
            st.info(text)


def thumb(session: Session, image_id: int, caption: str | None = None) -> None:
    """An image's cached thumbnail (its path is remembered until the next rescan)."""
    paths = ss.setdefault("thumbs", {})

    def show() -> None:
        if image_id not in paths:
            paths[image_id] = str(session.thumbnail(image_id))
        st.image(paths[image_id], caption=caption, width="stretch")

    if (error := session.attempt(show).error) is not None:
        st.caption(f"image {image_id}: {error}")


def control(c: Control, disabled: bool = False) -> Any:
    """Render one Control; returns its value."""
    kw = {"key": c.key, "help": c.help, "disabled": disabled}
    if c.kind == "bool":
        return st.checkbox(c.label, c.default, **kw)
    if c.kind in ("choice", "radio"):
        widget = st.selectbox if c.kind == "choice" else partial(st.radio, horizontal=True)
        return widget(c.label, c.choices, c.index, **kw)
    if c.kind == "segmented":
        return st.segmented_control(c.label, c.choices, default=c.default, **kw)
    widget = st.slider if c.kind == "slider" else partial(st.number_input, format=c.fmt)
    return widget(c.label, c.low, c.high, c.default, c.step, **kw)


def controls(items: Iterable[Control], values: dict[str, Any] | None = None, group: str = "main",
             cols: Iterable[Any] | None = None) -> dict[str, Any]:
    """Render the shown controls of ``group`` in order (one per column of ``cols`` when given),
    adding their values to ``values``."""
    values = {} if values is None else values
    slots = iter(cols) if cols is not None else None
    for c in items:
        if c.group == group and c.shown(values):
            with next(slots) if slots is not None else nullcontext():
                values[c.key] = control(c, disabled=not c.enabled(values))
    return values


def button(session: Session, b: Button, width: str = "content") -> None:
    """Render one Button (its label on one line): it calls its session method, or updates the app state."""
    kw: dict[str, Any] = {"key": b.key, "icon": b.icon, "help": b.help, "disabled": b.disabled, "width": width,
                          "type": "primary" if b.primary else "secondary"}
    if b.state is not None:
        st.button(b.label, on_click=ss.update, kwargs=dict(b.state), **kw)
    elif b.action is None:  # a button shown disabled, with nothing to do
        st.button(b.label, **kw)
    else:
        st.button(b.label, on_click=act, args=(session, getattr(session, b.action), *b.args),
                  kwargs={"ok": b.message, "app": b.refresh, "after": b.after, "undo": b.offers_undo}, **kw)


def grid(session: Session, cards: Iterable[Card]) -> None:
    """Image cards, CARDS to a row; the buttons of a card that is not ``inline`` are stacked, card wide."""
    cols = st.columns(CARDS)
    for n, card in enumerate(cards):
        with cols[n % CARDS].container(border=True):
            thumb(session, card.image_id)
            st.markdown(card.text)
            with st.container(horizontal=card.inline, gap="small"):
                for b in card.buttons:
                    button(session, b, width="content" if card.inline else "stretch")


def progress_bar(text: str, counting: str) -> tuple[Callable[[int, int], None], Callable[[str], None]]:
    """A progress bar showing ``text``, and its two callbacks: ``(done, total)`` shows
    "<counting> done/total", a stage message replaces the text and empties the bar."""
    bar = st.progress(0.0, text=text)
    return (lambda d, t: bar.progress(min(1.0, d / max(t, 1)), text=f"{counting} {d}/{t}"),
            lambda stage: bar.progress(0.0, text=stage))


LIVE_EVERY_S = 3.0


def job_waits_note(read: Callable[[], tuple[str, float] | None]) -> None:
    """Above a round's progress: the background embedding (``read`` returns its progress, or None
    when there is no job) waits while the round runs; the job's own bar updates only after it."""
    if read() is not None:
        st.caption("The background embedding waits while this round runs and goes on after it.")


def live_progress(read: Callable[[], tuple[str, float] | None]) -> None:
    """A progress bar that refreshes itself every few seconds while ``read`` returns
    ``(text, fraction)``. The fragment is rendered on every run, timed only while there is
    progress to show: when the job ends, one full rerun brings in what it produced and the next
    definition (untimed) stops the refreshes."""
    running = read() is not None

    @st.fragment(run_every=LIVE_EVERY_S if running else None)
    def bar() -> None:
        now = read()
        if now is None:
            if running:  # it ended since the page was laid out: let counts and the pool catch up
                st.rerun()
            return
        text, fraction = now
        st.progress(min(1.0, max(0.0, fraction)), text=text)

    bar()

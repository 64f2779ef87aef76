"""What the command line shows on stderr while a long step works: a progress bar for counted
work (images, steps) and a line per stage of work that has no count (mode auto scoring its
candidates)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["progress_bar", "stage_printer"]


LOG_INTERVAL = 10.0  # seconds between a bar's lines when stderr is a file, not a terminal


def progress_bar(desc: str) -> Callable[..., None]:
    """A ``(done, total, *rest)`` callback drawing a tqdm bar named ``desc`` (unit: images, or
    steps for ``"train"``), closed when ``done`` reaches ``total``. On a terminal the bar redraws
    in place; into a file (a redirected log) it writes a line at most every
    :data:`LOG_INTERVAL` seconds and the final count once, not a line per image."""
    from tqdm import tqdm

    state: dict[str, Any] = {}
    terminal = sys.stderr.isatty()

    def update(done: int, total: int, *_: Any) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, unit="img" if desc != "train" else "step",
                                leave=not terminal, mininterval=0.1 if terminal else LOG_INTERVAL,
                                file=sys.stderr)
        bar = state["bar"]
        bar.total = total
        bar.update(done - bar.n)  # redraws only when mininterval has passed
        if done >= total:
            bar.close()  # into a file: its final count, once

    return update


def stage_printer(shown: Callable[[str], str] = str) -> Callable[[str], None]:
    """A callback writing each stage message (through ``shown``, e.g. an escaper of unprintable
    characters) to stderr with the seconds since the first stage, so a decision that takes
    minutes is not silent."""
    start: list[float] = []

    def say(message: str) -> None:
        if not start:
            start.append(time.monotonic())
        print(f"{shown(message)} ({time.monotonic() - start[0]:.0f} s)", file=sys.stderr, flush=True)

    return say

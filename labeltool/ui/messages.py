"""Which errors a front end shows as a message instead of a traceback, and how it words them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["USER_ERRORS", "Attempt", "attempt", "low_precision_remedy", "user_message"]

# what a session call raises for bad input, a missing file or an impossible request
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, RuntimeError, KeyError, OSError, FloatingPointError, NotImplementedError,
)


def user_message(e: BaseException) -> str:
    """The text of an error (a ``KeyError``'s message without the quotes ``str`` adds)."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


@dataclass(frozen=True)
class Attempt:
    """What a call gave: its ``result``, or (``result`` None) the ``error`` message it raised."""

    result: Any
    error: str | None = None


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Attempt:
    """Call ``fn``; a :data:`USER_ERRORS` error becomes the message of the returned Attempt."""
    try:
        return Attempt(fn(*args, **kwargs))
    except USER_ERRORS as e:
        return Attempt(None, user_message(e))


def low_precision_remedy(end_to_end: bool, command_line: bool) -> str:
    """What to do about a batch whose estimated precision is low, as one sentence. A round that
    already trained the network end to end (``end_to_end``) is not told to do so again; the
    remedies name the CLI's flags or the app's controls (``command_line``)."""
    review = "Review them one by one (reject the wrong ones) or label the hardest images by hand"
    if not end_to_end:
        how = "--mode finetune" if command_line else "Train → mode *finetune*"
        return f"{review}, or train the backbone end to end ({how})."
    more = "--finetune-steps" if command_line else "more rounds"
    return (f"{review}: this round already trained the network end to end, so more verified labels (or more "
            f"end-to-end training: {more}) are what raises its accuracy.")

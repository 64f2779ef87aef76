"""Which errors a front end shows as a message instead of a traceback, and how it words them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["USER_ERRORS", "Attempt", "attempt", "user_message"]

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

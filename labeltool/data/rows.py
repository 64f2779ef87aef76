"""The rows the project store hands out: images, rounds and stored suggestions."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

__all__ = ["ImageRow", "RoundRow", "StoredSuggestion", "image_row"]


@dataclass(frozen=True)
class ImageRow:
    """One image of the project as stored."""

    id: int
    relpath: str
    sha256: str | None
    size_bytes: int
    mtime_ns: int
    width: int | None
    height: int | None
    status: str
    error: str | None
    seed_class_id: int | None
    present: bool


def image_row(r: sqlite3.Row) -> ImageRow:
    """An :class:`ImageRow` from a row of the ``images`` table."""
    return ImageRow(
        id=r["id"], relpath=r["relpath"], sha256=r["sha256"], size_bytes=r["size_bytes"],
        mtime_ns=r["mtime_ns"], width=r["width"], height=r["height"], status=r["status"],
        error=r["error"], seed_class_id=r["seed_class_id"], present=bool(r["present"]),
    )


@dataclass(frozen=True)
class RoundRow:
    """One training round: its frozen config and the metrics recorded for it."""

    id: int
    started: float
    finished: float | None
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def trained_end_to_end(self) -> bool:
        """Whether this round trained its network on images (mode ``finetune``, chosen or by hand)."""
        return self.config.get("mode") == "finetune"


@dataclass(frozen=True)
class StoredSuggestion:
    """A suggestion as persisted for a round."""

    round: int
    image_id: int
    class_id: int
    confidence: float
    source: str
    rank: int
    distance: float | None
    evidence: tuple[int, ...]

"""Class names: what a name must be to serve as a folder name on export."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["validate_class_name"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_class_name(name: str) -> str:
    """A class name must be a usable folder name: non-empty, no separators or control characters,
    not ``.``/``..``, at most 100 characters. Returns the NFC-normalised, stripped name."""
    clean = unicodedata.normalize("NFC", str(name)).strip()
    if not clean:
        raise ValueError("a class name cannot be empty")
    if clean in (".", "..") or "/" in clean or "\\" in clean or _CONTROL.search(clean):
        raise ValueError(f"class name {name!r} cannot contain '/', '\\', control characters or be '.'/'..'")
    if len(clean) > 100:
        raise ValueError(f"class name {clean[:20]!r}... is longer than 100 characters")
    return clean

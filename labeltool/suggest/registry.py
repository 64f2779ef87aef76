"""Registry of suggestion sources.

``@register_source("name")`` on a :class:`~labeltool.suggest.sources.base.SuggestionSource`
subclass makes it available by name; each source lives in its own module of
:mod:`labeltool.suggest.sources`. ``list_sources()`` names them, ``get_source(name)`` gives the
scorer and ``source_info(name)`` what the app and CLI need to know about it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import labeltool.suggest.sources as _sources_pkg
from labeltool.suggest.sources.base import SuggestionSource

__all__ = ["SourceInfo", "SuggestionSource", "get_source", "list_sources", "register_source", "source_info"]

_REGISTRY: dict[str, SuggestionSource] = {}
_T = TypeVar("_T", bound=type[SuggestionSource])
_loaded = False


@dataclass(frozen=True)
class SourceInfo:
    """What a source is, for the app and CLI (see :class:`SuggestionSource` for the flags)."""

    name: str
    help: str
    needs_probs: bool
    needs_labels: bool
    uses_knn_confidence: bool
    has_distance: bool


def register_source(name: str) -> Callable[[_T], _T]:
    """Class decorator that registers a :class:`SuggestionSource` under ``name``."""

    def wrap(cls: _T) -> _T:
        if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
            raise ValueError(f"suggestion source {name!r} is registered twice")
        if not cls.help:
            raise ValueError(f"suggestion source {name!r} needs a one-line help")
        cls.name = name
        _REGISTRY[name] = cls()
        return cls

    return wrap


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in pkgutil.iter_modules(_sources_pkg.__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"{_sources_pkg.__name__}.{mod.name}")
    _loaded = True


def list_sources() -> list[str]:
    """Names of all registered sources, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get_source(name: str) -> SuggestionSource:
    """The scorer registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown suggestion source {name!r}; valid sources: {', '.join(sorted(_REGISTRY))}"
        ) from None


def source_info(name: str) -> SourceInfo:
    """:class:`SourceInfo` of the source ``name`` (``ValueError`` for an unknown name)."""
    src = get_source(name)
    return SourceInfo(
        name=name,
        help=src.help,
        needs_probs=bool(src.needs_probs),
        needs_labels=bool(src.needs_labels),
        uses_knn_confidence=bool(src.uses_knn_confidence),
        has_distance=bool(src.has_distance),
    )

"""Registry of embedding losses.

``@register_loss("name")`` on an :class:`EmbeddingLoss` subclass makes it available by name;
``create_loss(name, num_classes=..., embedding_dim=..., **hyper)`` builds one and
``list_losses()`` names them all. Each loss lives in its own module in this package.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from labeltool.losses.base import EmbeddingLoss, HyperParam

__all__ = [
    "EmbeddingLoss",
    "HyperParam",
    "create_loss",
    "get_loss_class",
    "list_losses",
    "register_loss",
]

_REGISTRY: dict[str, type[EmbeddingLoss]] = {}
_T = TypeVar("_T", bound=type[EmbeddingLoss])


def register_loss(name: str) -> Callable[[_T], _T]:
    """Class decorator that registers an :class:`EmbeddingLoss` under ``name``."""

    def wrap(cls: _T) -> _T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"loss {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in ("base",) and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def list_losses() -> list[str]:
    """Names of all registered losses, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get_loss_class(name: str) -> type[EmbeddingLoss]:
    """The class registered as ``name``; ``ValueError`` listing valid names otherwise."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(_REGISTRY))}") from None


def create_loss(name: str, *, num_classes: int, embedding_dim: int, **hyper: Any) -> EmbeddingLoss:
    """Build the loss ``name`` for ``num_classes`` classes and ``embedding_dim``-d embeddings."""
    return get_loss_class(name)(num_classes=num_classes, embedding_dim=embedding_dim, **hyper)

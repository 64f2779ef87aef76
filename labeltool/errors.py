"""Typed errors for the conditions callers act on, instead of ``RuntimeError`` as control flow.

Each subclasses the built-in type it replaced, so code that caught ``RuntimeError`` or
``ValueError`` before still catches it; code that decides something catches the typed error.
"""

from __future__ import annotations

__all__ = [
    "DamagedDatabaseError", "DatabaseDiskError", "DatabaseReplacedError", "EmptyPoolError", "LabeltoolError",
    "MissingDatabaseError", "NoRoundError", "ProjectDatabaseError", "ProjectMismatchError", "StaleFeaturesError",
]


class LabeltoolError(Exception):
    """Base of the errors labeltool raises on purpose (its message says what to do)."""


class NoRoundError(LabeltoolError, RuntimeError):
    """No training round has finished yet, so there is no embedding, model or suggestion."""

    def __init__(self, message: str = "no round has been trained yet; run a training round first") -> None:
        super().__init__(message)


class StaleFeaturesError(LabeltoolError, RuntimeError):
    """A saved round was trained on other features than the project's cache holds now."""


class EmptyPoolError(LabeltoolError, RuntimeError):
    """There is nothing to train on: no usable, embedded image."""


class ProjectMismatchError(LabeltoolError, ValueError):
    """An existing project does not fit what was asked of it (another backbone, say)."""


class ProjectDatabaseError(LabeltoolError, RuntimeError):
    """The project database cannot be used as it is; the message names the file and what to do."""


class DamagedDatabaseError(ProjectDatabaseError):
    """``project.sqlite`` is not a database or fails SQLite's ``quick_check``."""


class DatabaseReplacedError(ProjectDatabaseError):
    """``project.sqlite`` was deleted or replaced while a session had it open (nothing was written)."""


class MissingDatabaseError(ProjectDatabaseError):
    """The project holds checkpoints or features but its database is gone."""


class DatabaseDiskError(ProjectDatabaseError, OSError):
    """The disk under the database is full, failing or read-only; the database itself is not
    reported damaged. An ``OSError`` too, like the other errors of a full disk."""

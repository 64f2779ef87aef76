"""A :class:`~labeltool.data.store.Store` usable from every thread of a web server."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from labeltool.data.db_file import file_identity
from labeltool.data.store import Store
from labeltool.errors import DatabaseReplacedError

__all__ = ["ThreadLocalStore"]


class ThreadLocalStore:
    """A :class:`Store` per thread on the same database.

    A web server answers each page run on its own thread, and an SQLite connection may only be
    used by the thread that made it; this proxy opens one connection per thread and forwards
    every attribute to it. Writes stay durable and serialised by SQLite itself.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._identity = file_identity(self.path)  # every thread's connection must reach this file

    def _store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            if self._identity is not None and file_identity(self.path) != self._identity:  # before a new file
                raise DatabaseReplacedError(
                    f"the project database {self.path} was deleted or replaced while the app had it open; "
                    "nothing was written. Put it back (or keep the new one) and open the project again"
                )
            store = Store(self.path, check=False)  # the session checked it when it opened
            self._identity = self._identity or file_identity(self.path)
            self._local.store = store
        return store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store(), name)

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        store = getattr(self._local, "store", None)
        if store is not None:
            store.close()
            self._local.store = None

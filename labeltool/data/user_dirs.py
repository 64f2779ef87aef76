"""Where a project lives when the image folder itself must not be written to."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from labeltool.data.project import CONFIG_FILE, PROJECT_DIRNAME

__all__ = ["resolve_project_dir", "user_cache_root"]


def user_cache_root() -> Path:
    """``$LABELTOOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/labeltool``, else ``~/.cache/labeltool``."""
    env = os.environ.get("LABELTOOL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "labeltool"


def resolve_project_dir(folder: str | Path, project_dir: str | Path | None = None,
                        protected: Iterable[str | Path] = ()) -> Path | None:
    """The project directory to use for ``folder``.

    An explicit ``project_dir`` wins; a folder that already holds a project keeps it (None = the
    default ``<folder>/.labeltool``). A folder inside one of ``protected`` (e.g. the sample data of
    a source checkout) or a read-only folder gets a per-user directory
    ``<cache>/projects/<name>-<hash of the path>`` instead, so nothing is written into it.
    """
    if project_dir:
        return Path(project_dir).expanduser()
    root = Path(folder).expanduser().resolve()
    if (root / PROJECT_DIRNAME / CONFIG_FILE).exists():
        return None
    inside = any(root == Path(p).resolve() or Path(p).resolve() in root.parents for p in protected)
    if inside or (root.is_dir() and not os.access(root, os.W_OK)):
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", root.name)[:40] or "folder"
        return user_cache_root() / "projects" / f"{name}-{digest}"
    return None

"""A labeling project on disk: where its files live and its frozen configuration."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from labeltool.config import ProjectConfig

PROJECT_DIRNAME = ".labeltool"
CONFIG_FILE = "project.json"


@dataclass(frozen=True)
class Project:
    """Paths of a project: the image folder it labels and the directory it owns."""

    image_root: Path
    dir: Path
    config: ProjectConfig

    @property
    def db_path(self) -> Path:
        return self.dir / "project.sqlite"

    @property
    def embeddings_dir(self) -> Path:
        return self.dir / "embeddings"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def thumbnails_dir(self) -> Path:
        return self.dir / "thumbnails"

    @property
    def cache_dir(self) -> Path:
        return self.dir / "cache"

    def image_path(self, relpath: str) -> Path:
        """Absolute path of an image given its path relative to the image folder."""
        return self.image_root / relpath

    def with_config(self, **changes: Any) -> Project:
        return replace(self, config=replace(self.config, **changes))


def default_project_dir(image_root: Path) -> Path:
    return image_root / PROJECT_DIRNAME


def open_project(
    image_root: str | Path,
    *,
    project_dir: str | Path | None = None,
    config: ProjectConfig | None = None,
    create: bool = True,
) -> Project:
    """Open the project of ``image_root`` (creating it when ``create``).

    ``config`` applies only when the project is new; an existing project keeps its saved config
    (a different backbone for an existing project raises, since its features would not match).
    """
    root = Path(image_root).expanduser().resolve()
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder; point labeltool at the folder that holds the images")
    pdir = Path(project_dir).expanduser().resolve() if project_dir else default_project_dir(root)
    _check_project_dir(root, pdir)
    cfg_path = pdir / CONFIG_FILE
    if cfg_path.exists():
        try:
            saved = ProjectConfig.from_json(json.loads(cfg_path.read_text())["config"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"project file {cfg_path} is damaged ({e}); move it away to start over") from None
        if config is not None and config.backbone != saved.backbone:
            raise ValueError(
                f"project {pdir} uses backbone {saved.backbone!r}, not {config.backbone!r}; "
                "use another --project-dir for a different backbone"
            )
        return Project(root, pdir, saved)
    if not create:
        raise FileNotFoundError(f"no labeltool project in {pdir}; run 'labeltool init {root}' first")
    cfg = config or ProjectConfig()
    pdir.mkdir(parents=True, exist_ok=True)
    tmp = cfg_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"image_root": str(root), "config": asdict(cfg)}, indent=2))
    os.replace(tmp, cfg_path)
    return Project(root, pdir, cfg)


def _check_project_dir(root: Path, pdir: Path) -> None:
    """The project directory may live inside the image folder only as a hidden or top-level
    folder of its own, never inside or as a class folder (its files would look like images, and
    the scan skips the project directory, so the class's images would vanish). Symlinks are
    resolved first."""
    pdir = pdir.resolve()
    if pdir == root:
        raise ValueError(f"the project directory cannot be the image folder itself ({root})")
    try:
        rel = pdir.relative_to(root)
    except ValueError:
        return
    if rel.parts[0].startswith("."):
        return
    if len(rel.parts) > 1:
        raise ValueError(
            f"project directory {pdir} is inside the class folder {root / rel.parts[0]}; "
            f"put it outside the image folder or at {root / PROJECT_DIRNAME}"
        )
    if pdir.is_dir() and not (pdir / CONFIG_FILE).exists() and any(pdir.iterdir()):
        raise ValueError(
            f"project directory {pdir} is an existing folder of the image folder (a class folder?); "
            f"put it outside the image folder or at {root / PROJECT_DIRNAME}"
        )

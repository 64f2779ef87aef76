"""A labeling project on disk: where its files live and its frozen configuration."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from labeltool.config import ProjectConfig
from labeltool.errors import MissingDatabaseError, ProjectMismatchError

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
    relocate: bool = False,
) -> Project:
    """Open the project of ``image_root`` (creating it when ``create``).

    ``config`` applies only when the project is new; an existing project keeps its saved config
    (a different backbone for an existing project raises, since its features would not match).
    A project belongs to the image folder it was created for: another folder is refused with
    :class:`ProjectMismatchError`, unless the project lives inside ``image_root`` (it moved with
    its folder) or ``relocate`` says the folder was moved or renamed to ``image_root``.
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
        saved, saved_root = _read_project_file(cfg_path)
        if config is not None and config.backbone != saved.backbone:
            raise ProjectMismatchError(
                f"project {pdir} uses backbone {saved.backbone!r}, not {config.backbone!r}; "
                "use another --project-dir for a different backbone"
            )
        if relocate and saved_root != root:
            _write_project_file(cfg_path, root, saved)
        else:
            _check_image_folder(root, pdir, saved_root)
        project = Project(root, pdir, saved)
        _refuse_lost_database(project, f"its database {project.db_path} is missing")
        return project
    if relocate:
        raise FileNotFoundError(f"no labeltool project in {pdir} to relocate; give the --project-dir it lives in")
    if not create:
        raise FileNotFoundError(f"no labeltool project in {pdir}; run 'labeltool init {root}' first")
    cfg = config or ProjectConfig()
    _refuse_lost_database(Project(root, pdir, cfg), f"its project file {cfg_path} is missing")
    try:
        pdir.mkdir(parents=True, exist_ok=True)
        _write_project_file(cfg_path, root, cfg)
    except OSError as e:
        raise _unwritable_project_dir(pdir, e, default=project_dir is None) from None
    return Project(root, pdir, cfg)


def _unwritable_project_dir(pdir: Path, e: OSError, *, default: bool) -> OSError:
    """The error for a project directory that cannot be created: with the default location
    (inside the image folder), say how to put the project elsewhere."""
    why = e.strerror or str(e)
    if default:
        return PermissionError(
            f"cannot create the project in {pdir} ({why}): the image folder cannot be written to; "
            "give the project another place with --project-dir DIR (your images are only read)"
        )
    return PermissionError(f"cannot create the project directory {pdir} ({why}); choose a folder you can write to")


def _read_project_file(cfg_path: Path) -> tuple[ProjectConfig, Path | None]:
    """The saved config and image folder (None in a file that does not record it)."""
    try:
        data = json.loads(cfg_path.read_text())
        saved = ProjectConfig.from_json(data["config"])
        recorded = data.get("image_root")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"project file {cfg_path} is damaged ({e}); move it away to start over") from None
    return saved, Path(recorded) if isinstance(recorded, str) else None


def _write_project_file(cfg_path: Path, root: Path, cfg: ProjectConfig) -> None:
    """Write ``project.json`` atomically (a temporary file renamed over it)."""
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"image_root": str(root), "config": asdict(cfg)}, indent=2))
    os.replace(tmp, cfg_path)


def _check_image_folder(root: Path, pdir: Path, saved_root: Path | None) -> None:
    """Refuse to open the project of ``saved_root`` for another folder ``root``: its scan would
    mark every image of ``saved_root`` as gone and fill the database with ``root``'s."""
    if saved_root is None or saved_root == root or pdir.is_relative_to(root):
        return  # an older project file, the same folder, or a project that moved along with its folder
    raise ProjectMismatchError(
        f"project {pdir} belongs to the image folder {saved_root}, not {root}. To label {root}, leave out "
        f"--project-dir (or give a new one); if {saved_root} was moved or renamed to {root}, move the project "
        f"with: labeltool init {root} --project-dir {pdir} --relocate"
    )


def _refuse_lost_database(project: Project, what: str) -> None:
    """Refuse to start an empty database in a project directory that holds earlier work (its
    checkpoints or features): a new database would count rounds from 1 again and overwrite them."""
    if project.db_path.exists():
        return
    found = [d.name for d in (project.checkpoints_dir, project.embeddings_dir) if _holds_work(d)]
    if not found:
        return
    copies = sorted(project.dir.glob(f"{project.db_path.name}.detached-*"))
    spare = f" (or the copy {copies[-1]})" if copies else ""
    raise MissingDatabaseError(
        f"project {project.dir} holds {' and '.join(found)} from earlier work, but {what}; opening it would "
        f"start an empty project and overwrite that work. Restore {project.db_path} from a backup{spare}, "
        f"or move {project.dir} away to start over (the images are not touched)"
    )


def _holds_work(directory: Path) -> bool:
    """``directory`` holds a non-empty file other than a ``.json`` description (an empty feature
    cache writes only its description)."""
    if not directory.is_dir():
        return False
    return any(f.is_file() and f.suffix != ".json" and f.stat().st_size > 0 for f in directory.iterdir())


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

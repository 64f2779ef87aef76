"""Where a session keeps its project: never inside one of the image folder's classes, always
with the folder it was made for, and never restarted empty over earlier work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labeltool.cli import main
from labeltool.config import ProjectConfig
from labeltool.errors import MissingDatabaseError, ProjectMismatchError
from labeltool.session import LabelingSession
from tests.sample_helpers import SAMPLE


def test_project_dir_cannot_be_a_class_folder(tmp_path: Path) -> None:
    """It used to be accepted: the scan then skipped the whole class as 'excluded'."""
    root = tmp_path / "photos"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="class folder"):
        LabelingSession.open(root, project_dir=root / "cat")
    (root / ".labeltool").symlink_to(root / "cat")  # the default location, redirected into a class
    with pytest.raises(ValueError, match="class folder"):
        LabelingSession.open(root)
    (root / ".labeltool").unlink()
    with LabelingSession.open(root, project_dir=root / "project", config=ProjectConfig(image_size=64)) as s:
        assert s.project.dir == (root / "project").resolve()  # a new folder of its own is fine
    LabelingSession.open(root, project_dir=root / "project").close()  # and reopening it


def _folder(root: Path, classes: tuple[str, ...] = ("bag", "coat"), per_class: int = 2) -> Path:
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for src in sorted((SAMPLE / cls).iterdir())[:per_class]:
            shutil.copy(src, root / cls)
    return root


def test_a_project_refuses_another_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It used to scan B into A's database: A's images were all marked gone, B's added."""
    a = _folder(tmp_path / "A", per_class=3)
    b = _folder(tmp_path / "B", classes=("dress",), per_class=1)
    LabelingSession.open(a, config=ProjectConfig(image_size=64)).close()
    with pytest.raises(ProjectMismatchError) as e:
        LabelingSession.open(b, project_dir=a / ".labeltool", scan=True)
    assert str(a.resolve()) in str(e.value) and str(b.resolve()) in str(e.value) and "--relocate" in str(e.value)
    assert main(["status", str(b), "--project-dir", str(a / ".labeltool")]) == 2
    assert "belongs to the image folder" in capsys.readouterr().err
    with LabelingSession.open(a) as s:
        assert len(s.store.images()) == 6 and s.classes == ["bag", "coat"]


def test_a_moved_folder_takes_its_project_along_or_is_relocated(tmp_path: Path) -> None:
    inside = _folder(tmp_path / "inside")
    LabelingSession.open(inside, config=ProjectConfig(image_size=64)).close()
    inside.rename(tmp_path / "inside-renamed")  # the default project dir moves with its folder
    with LabelingSession.open(tmp_path / "inside-renamed") as s:
        assert len(s.store.images()) == 4

    old, pdir = _folder(tmp_path / "old"), tmp_path / "projects" / "old"
    with LabelingSession.open(old, project_dir=pdir, config=ProjectConfig(image_size=64)) as s:
        first = s.store.images()[0].id
        s.assign(first, "coat")
    new = old.rename(tmp_path / "new")
    with pytest.raises(ProjectMismatchError, match="--relocate"):
        LabelingSession.open(new, project_dir=pdir)
    assert main(["init", str(new), "--project-dir", str(pdir), "--relocate"]) == 0
    with LabelingSession.open(new, project_dir=pdir) as s:
        assert s.project.image_root == new.resolve()
        assert len(s.store.images()) == 4 and s.label_state().labels[first] == s.classes.index("coat")
    with pytest.raises(FileNotFoundError, match="to relocate"):
        LabelingSession.open(new, project_dir=tmp_path / "nowhere", relocate=True)


def test_a_lost_database_is_not_replaced_by_an_empty_one(tmp_path: Path) -> None:
    """It used to start a fresh project whose first round overwrote the old round-1."""
    root = _folder(tmp_path / "photos")
    with LabelingSession.open(root, config=ProjectConfig(image_size=64)) as s:
        project = s.project
    for name in ("project.sqlite", "project.sqlite-wal", "project.sqlite-shm"):
        (project.dir / name).unlink(missing_ok=True)
    project.embeddings_dir.mkdir(exist_ok=True)
    (project.embeddings_dir / "key.json").write_text("{}")  # an empty cache's description is no work
    LabelingSession.open(root).close()
    project.db_path.unlink()
    project.checkpoints_dir.mkdir()
    (project.checkpoints_dir / "round-1.safetensors").write_bytes(b"weights")
    with pytest.raises(MissingDatabaseError, match="checkpoints") as e:
        LabelingSession.open(root)
    assert str(project.db_path) in str(e.value) and "backup" in str(e.value)
    (project.dir / "project.json").unlink()
    with pytest.raises(MissingDatabaseError, match="project.json is missing"):
        LabelingSession.open(root, config=ProjectConfig(image_size=64))
    assert not project.db_path.exists() and (project.checkpoints_dir / "round-1.safetensors").read_bytes() == b"weights"

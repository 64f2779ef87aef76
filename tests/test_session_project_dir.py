"""Where a session keeps its project: never inside one of the image folder's classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from labeltool.config import ProjectConfig
from labeltool.session import LabelingSession


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

"""Tests for labeltool.data.project: a read-only image folder gets a clear way out, not a traceback."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from labeltool.data.project import open_project
from labeltool.session import LabelingSession

from sample_helpers import SAMPLE, mount


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    shutil.copytree(SAMPLE / "bag", root / "bag")
    shutil.copytree(SAMPLE / "coat", root / "coat")
    return root


def test_an_unwritable_image_folder_says_to_use_project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path)
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        if self.is_relative_to(root):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(PermissionError, match=r"image folder cannot be written to; give the project another "
                                              r"place with --project-dir"):
        open_project(root)
    with pytest.raises(PermissionError, match="choose a folder you can write to"):
        open_project(root, project_dir=root / ".elsewhere")
    open_project(root, project_dir=tmp_path / "proj")  # the way out works
    assert (tmp_path / "proj" / "project.json").is_file()


def test_a_read_only_mount_is_refused_and_project_dir_works(tmp_path: Path) -> None:
    root, mnt = _folder(tmp_path), tmp_path / "ro"
    mnt.mkdir()
    mount("--bind", str(root), str(mnt))
    try:
        mount("-o", "remount,bind,ro", str(mnt))
        with pytest.raises(PermissionError, match="--project-dir"):
            LabelingSession.open(mnt)
        with LabelingSession.open(mnt, project_dir=tmp_path / "proj") as s:
            assert len(s.store.images()) == 10
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)

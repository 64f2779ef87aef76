"""Export safety: name collisions, refused targets, partial exports, links, permissions."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest

from labeltool.cli import main
from labeltool.config import ProjectConfig
from labeltool.io.export import remove_stale_partials, safe_filename
from labeltool.session import LabelingSession


def test_export_file_name_collisions_never_overwrite(tiny_session: LabelingSession, tmp_path: Path) -> None:
    """``unlabeled/a.png`` (id 3) becomes ``a-3.png``, which ``bag/a-3.png`` already took."""
    s = tiny_session
    ids = {r.relpath: r.id for r in s.store.images()}
    assert ids == {"bag/a-3.png": 1, "bag/a.png": 2, "unlabeled/a.png": 3}
    s.assign(3, "bag")
    out = s.export(tmp_path / "out", model=False)
    files = sorted(p.name for p in (out / "dataset" / "bag").iterdir())
    assert files == ["a-3-2.png", "a-3.png", "a.png"]
    man = pd.read_parquet(out / "dataset" / "manifest.parquet")
    assert len(set(man["path"])) == 3
    for path, rel in zip(man["path"], man["source_path"], strict=True):
        assert (out / "dataset" / path).read_bytes() == (s.project.image_root / rel).read_bytes()
    s.close()


def test_export_refuses_a_target_holding_the_images_or_the_project(tiny_session: LabelingSession,
                                                                    tmp_path: Path) -> None:
    """``overwrite`` on the image folder's parent used to move it aside and delete it."""
    s = tiny_session
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for target, why in ((tmp_path, "holds the image folder"), (s.project.dir, "inside the image folder")):
        with pytest.raises(ValueError, match=why):
            s.export(target, model=False, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    s.close()
    outside = tmp_path / "elsewhere" / "proj"
    with LabelingSession.open(s.project.image_root, project_dir=outside, config=ProjectConfig(image_size=64)) as s2:
        for target, why in ((outside, "inside the project directory"), (outside / "x", "inside the project"),
                            (outside.parent, "holds the project directory")):
            with pytest.raises(ValueError, match=why):
                s2.export(target, model=False, overwrite=True)
        assert (outside / "project.sqlite").exists()


def test_stale_partial_exports_are_removed_running_ones_kept(tiny_session: LabelingSession, tmp_path: Path) -> None:
    s = tiny_session
    out = tmp_path / "exports" / "ds"
    out.parent.mkdir()
    stale = out.parent / ".ds.partial-abcd1234"
    (stale / "dataset" / "bag").mkdir(parents=True)
    (stale / "dataset" / "bag" / "x.png").write_bytes(b"half")
    stale_old = out.parent / ".ds.partial-zzzz9999-old"
    stale_old.mkdir()
    running = out.parent / ".ds.partial-runn1ng0"
    running.mkdir()
    mine = out.parent / ".ds.partial-notes"  # not a name an export makes: left alone
    mine.mkdir()
    fd = os.open(running, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a live export holds it
    try:
        s.export(out, model=False)
        left = sorted(p.name for p in out.parent.iterdir())
        assert left == [".ds.partial-notes", ".ds.partial-runn1ng0", "ds"]
    finally:
        os.close(fd)
    assert remove_stale_partials(out) == [running]
    shutil.rmtree(mine)
    s.close()


def test_export_replaces_atomically_and_never_follows_links_out(tiny_session: LabelingSession,
                                                                tmp_path: Path) -> None:
    s = tiny_session
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    s.export(out, model=False)
    (out / "dataset" / "link").symlink_to(outside, target_is_directory=True)  # planted in the old export
    (out / "dataset" / "file_link.txt").symlink_to(outside / "keep.txt")
    inode = out.stat().st_ino
    s.export(out, model=False, overwrite=True)
    assert out.stat().st_ino != inode and (out / "dataset" / "manifest.csv").is_file()
    assert (outside / "keep.txt").read_text() == "mine"  # the old export's links were not followed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos", "precious"]
    # a source image swapped for a link to a file outside the image folder after the scan
    src = s.project.image_root / "bag" / "a.png"
    src.unlink()
    src.symlink_to(outside / "keep.txt")
    with pytest.raises(ValueError, match="points outside the image folder"):
        s.export(tmp_path / "out2", model=False)
    assert not (tmp_path / "out2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos", "precious"]
    s.close()


def test_safe_filename_handles_control_characters_in_extensions() -> None:
    assert safe_filename("a.p\ng") == "a.p_g"
    assert safe_filename("CON.PNG") == "_CON.png"
    assert safe_filename("-rf --all.png") == "-rf --all.png"


def test_unwritable_export_location_is_a_clear_refusal(tiny_session: LabelingSession, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A PermissionError used to reach the user as a traceback of the CLI."""
    s = tiny_session
    root = str(s.project.image_root)
    s.close()

    def denied(*args: object, **kw: object) -> str:
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro" / ".x.partial-abcdefgh"))

    monkeypatch.setattr("labeltool.io.export._make_partial", denied)
    assert main(["export", root, str(tmp_path / "ro" / "x"), "--dataset-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labeltool export: error: cannot write the export") and "Permission denied" in err


def test_export_folder_gets_the_usual_permissions(tiny_session: LabelingSession, tmp_path: Path) -> None:
    """The export was made by ``tempfile.mkdtemp``: mode 0700 whatever the umask."""
    s = tiny_session
    umask = os.umask(0o022)
    try:
        out = s.export(tmp_path / "shared", model=False)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    s.close()

"""Regression tests for the defects found while hardening: each one failed before its fix."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from labeltool.cli import main
from labeltool.config import ProjectConfig
from labeltool.data.features import FeatureCache
from labeltool.data.store import Store
from labeltool.io.export import export_project, remove_stale_partials, safe_filename
from labeltool.session import LabelingSession


def _h(i: int) -> str:
    return format(i, "064x")


def test_feature_cache_ignores_an_index_line_cut_short(tmp_path: Path) -> None:
    """A crash mid-line could leave ``<sha> 12`` for ``<sha> 123``: wrong features, silently."""
    cache = FeatureCache(tmp_path, "k", 4)
    cache.append([_h(i) for i in range(20)], np.arange(80, dtype=np.float32).reshape(20, 4))
    with open(cache.index_path, "a") as fh:
        fh.write(f"{_h(99)} 1")  # meant "... 19\n"; the crash came first
    cache = FeatureCache(tmp_path, "k", 4)
    assert _h(99) not in cache and len(cache) == 20
    cache.append([_h(100)], np.full((1, 4), 7.0))  # the next append must not glue onto that line
    again = FeatureCache(tmp_path, "k", 4)
    assert _h(99) not in again and len(again) == 21
    np.testing.assert_array_equal(again.gather([_h(100)]), np.full((1, 4), 7.0))
    np.testing.assert_array_equal(again.gather([_h(3)]), [[12, 13, 14, 15]])


def test_damaged_database_is_a_clear_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "project.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RuntimeError, match="cannot open the project database"):
        Store(bad)
    root = tmp_path / "photos"
    root.mkdir()
    LabelingSession.open(root, config=ProjectConfig(image_size=64)).close()
    (root / ".labeltool" / "project.sqlite").write_bytes(b"garbage" * 1000)
    for name in ("project.sqlite-wal", "project.sqlite-shm"):
        (root / ".labeltool" / name).unlink(missing_ok=True)
    assert main(["status", str(root)]) == 2
    assert "cannot open the project database" in capsys.readouterr().err


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


def _labeled(tmp_path: Path) -> LabelingSession:
    root = tmp_path / "photos"
    from PIL import Image

    for rel in ("bag/a-3.png", "bag/a.png", "unlabeled/a.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), len(rel) * 9).save(root / rel)
    s = LabelingSession.open(root, config=ProjectConfig(image_size=64))
    return s


def test_export_file_name_collisions_never_overwrite(tmp_path: Path) -> None:
    """``unlabeled/a.png`` (id 3) becomes ``a-3.png``, which ``bag/a-3.png`` already took."""
    s = _labeled(tmp_path)
    ids = {r.relpath: r.id for r in s.store.images()}
    assert ids == {"bag/a-3.png": 1, "bag/a.png": 2, "unlabeled/a.png": 3}
    s.assign(3, "bag")
    out = export_project(s, tmp_path / "out", model=False)
    files = sorted(p.name for p in (out / "dataset" / "bag").iterdir())
    assert files == ["a-3-2.png", "a-3.png", "a.png"]
    import pandas as pd

    man = pd.read_parquet(out / "dataset" / "manifest.parquet")
    assert len(set(man["path"])) == 3
    for path, rel in zip(man["path"], man["source_path"], strict=True):
        assert (out / "dataset" / path).read_bytes() == (s.project.image_root / rel).read_bytes()
    s.close()


def test_export_refuses_a_target_holding_the_images_or_the_project(tmp_path: Path) -> None:
    """``overwrite`` on the image folder's parent used to move it aside and delete it."""
    s = _labeled(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for target, why in ((tmp_path, "holds the image folder"), (s.project.dir, "inside the image folder")):
        with pytest.raises(ValueError, match=why):
            export_project(s, target, model=False, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    s.close()
    outside = tmp_path / "elsewhere" / "proj"
    with LabelingSession.open(s.project.image_root, project_dir=outside, config=ProjectConfig(image_size=64)) as s2:
        for target, why in ((outside, "inside the project directory"), (outside / "x", "inside the project"),
                            (outside.parent, "holds the project directory")):
            with pytest.raises(ValueError, match=why):
                export_project(s2, target, model=False, overwrite=True)
        assert (outside / "project.sqlite").exists()


def test_stale_partial_exports_are_removed_running_ones_kept(tmp_path: Path) -> None:
    s = _labeled(tmp_path)
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
        export_project(s, out, model=False)
        left = sorted(p.name for p in out.parent.iterdir())
        assert left == [".ds.partial-notes", ".ds.partial-runn1ng0", "ds"]
    finally:
        os.close(fd)
    assert remove_stale_partials(out) == [running]
    shutil.rmtree(mine)
    s.close()


def test_export_replaces_atomically_and_never_follows_links_out(tmp_path: Path) -> None:
    s = _labeled(tmp_path)
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    export_project(s, out, model=False)
    (out / "dataset" / "link").symlink_to(outside, target_is_directory=True)  # planted in the old export
    (out / "dataset" / "file_link.txt").symlink_to(outside / "keep.txt")
    inode = out.stat().st_ino
    export_project(s, out, model=False, overwrite=True)
    assert out.stat().st_ino != inode and (out / "dataset" / "manifest.csv").is_file()
    assert (outside / "keep.txt").read_text() == "mine"  # the old export's links were not followed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos", "precious"]
    # a source image swapped for a link to a file outside the image folder after the scan
    src = s.project.image_root / "bag" / "a.png"
    src.unlink()
    src.symlink_to(outside / "keep.txt")
    with pytest.raises(ValueError, match="points outside the image folder"):
        export_project(s, tmp_path / "out2", model=False)
    assert not (tmp_path / "out2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos", "precious"]
    s.close()


def test_safe_filename_handles_control_characters_in_extensions() -> None:
    assert safe_filename("a.p\ng") == "a.p_g"
    assert safe_filename("CON.PNG") == "_CON.png"
    assert safe_filename("-rf --all.png") == "-rf --all.png"


def test_review_csv_that_is_not_text_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _labeled(tmp_path)
    root = str(s.project.image_root)
    s.close()
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("path,label\nbag/a.png,sac à main\n".encode("latin-1"))
    huge = tmp_path / "huge.csv"
    huge.write_text('path,label\n"' + "x" * 200_000 + '",bag\n')
    for f, why in ((latin, "not UTF-8 text"), (huge, "not a readable CSV file")):
        assert main(["review", root, "--decisions", str(f)]) == 2
        assert why in capsys.readouterr().err
    with Store(Path(root) / ".labeltool" / "project.sqlite") as st:
        assert st.decisions() == []  # nothing recorded


def test_unwritable_export_location_is_a_clear_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A PermissionError used to reach the user as a traceback of the CLI."""
    s = _labeled(tmp_path)
    root = str(s.project.image_root)
    s.close()

    def denied(*args: object, **kw: object) -> str:
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro" / ".x.partial-abcdefgh"))

    monkeypatch.setattr("labeltool.io.export._make_partial", denied)
    assert main(["export", root, str(tmp_path / "ro" / "x"), "--dataset-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labeltool export: error: cannot write the export") and "Permission denied" in err


def test_a_big_scan_does_not_starve_a_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan wrote every row in one transaction: a 200k-image rescan held the write lock about
    7 s, and another process's decision waited all along (past 30 s it would have failed)."""
    import threading
    import time

    db = tmp_path / "p.sqlite"
    with Store(db) as st:
        st.upsert_images([_row(0)], ["img0.png"])
    monkeypatch.setattr(Store, "UPSERT_CHUNK", 50)
    real_chunk = Store._upsert_chunk

    def slow_chunk(self: Store, rows: list[dict]) -> None:  # a slow disk: each chunk holds the lock 50 ms
        with self._tx():
            time.sleep(0.05)
        real_chunk(self, rows)

    monkeypatch.setattr(Store, "_upsert_chunk", slow_chunk)
    waits: list[float] = []

    def decide() -> None:
        with Store(db) as other:
            time.sleep(0.2)  # the scan is under way
            t0 = time.perf_counter()
            other.add_decisions([{"image_id": 1, "action": "unlabel"}])
            waits.append(time.perf_counter() - t0)

    scanner = Store(db)
    thread = threading.Thread(target=decide)
    thread.start()
    t0 = time.perf_counter()
    scanner.upsert_images([_row(i) for i in range(2000)], [f"img{i}.png" for i in range(1000)])
    scan_seconds = time.perf_counter() - t0
    thread.join()
    assert scan_seconds > 2.0 and waits and waits[0] < 1.0, (scan_seconds, waits)
    assert sum(r.present for r in scanner.images(only_present=False)) == 1000
    scanner.close()


def _row(i: int) -> dict:
    return {"relpath": f"img{i}.png", "sha256": _h(i), "size_bytes": 1, "mtime_ns": 0, "width": 1, "height": 1,
            "status": "ok", "error": None, "seed_class_id": None}


def test_review_csv_decisions_name_the_last_finished_round(tmp_path: Path) -> None:
    """They were tagged with the newest round even when it never finished (killed mid-training)."""
    s = _labeled(tmp_path)
    done = s.store.start_round({})
    s.store.finish_round(done, {})
    s.store.start_round({})  # killed
    f = tmp_path / "d.csv"
    f.write_text("path,action,label\nunlabeled/a.png,assign,bag\n")
    from labeltool.io.review_file import read_decisions

    s.record(read_decisions(s, f))
    assert [d.round for d in s.store.decisions()] == [done]
    s.close()


def test_export_folder_gets_the_usual_permissions(tmp_path: Path) -> None:
    """The export was made by ``tempfile.mkdtemp``: mode 0700 whatever the umask."""
    import stat

    s = _labeled(tmp_path)
    umask = os.umask(0o022)
    try:
        out = export_project(s, tmp_path / "shared", model=False)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    s.close()

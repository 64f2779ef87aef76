"""The project database as a file: damage found on open, a file deleted or replaced under a
writer refused, and a full disk told apart from a damaged database."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labeltool.cli import main
from labeltool.config import ProjectConfig
from labeltool.data import db_file
from labeltool.data.db_file import explain_sqlite_error
from labeltool.data.store import Store
from labeltool.errors import DamagedDatabaseError, DatabaseDiskError, DatabaseReplacedError
from labeltool.session import LabelingSession

from sample_helpers import SAMPLE, mount


def _image_rows(n: int) -> list[dict[str, object]]:
    return [{"relpath": f"c/{i:05d}.png", "sha256": f"{i:064x}", "size_bytes": 1, "mtime_ns": 1, "width": 1,
             "height": 1, "status": "ok", "error": None, "seed_class_id": None} for i in range(n)]


def _sqlite_error(message: str, code: int, name: str) -> sqlite3.OperationalError:
    e = sqlite3.OperationalError(message)
    e.sqlite_errorcode = code  # type: ignore[attr-defined]
    e.sqlite_errorname = name  # type: ignore[attr-defined]
    return e


def test_damaged_pages_are_found_on_open(tmp_path: Path) -> None:
    """Damage away from the pages an open reads was used silently: the store opened fine."""
    db = tmp_path / "project.sqlite"
    with Store(db) as s:
        s.upsert_images(_image_rows(3000), [])
    with sqlite3.connect(db) as c:
        page_size, pages = (c.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count"))
    c.close()
    data = bytearray(db.read_bytes())
    start = (pages // 2) * page_size + page_size - 300  # inside the rows of one images page
    data[start : start + 40] = bytes(range(200, 240))
    db.write_bytes(bytes(data))
    with pytest.raises(DamagedDatabaseError) as e:
        Store(db)
    msg = str(e.value)
    assert str(db) in msg and "damaged" in msg and "backup" in msg and ".recover" in msg


def test_a_database_deleted_under_a_writer_fails_loudly_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "project.sqlite"
    s = Store(db)
    s.ensure_classes(["cat", "dog"])
    db.unlink()
    with pytest.raises(DatabaseReplacedError, match="was deleted") as e:
        s.ensure_classes(["bird"])
    s.close()
    assert not db.exists()  # nothing wrote a new, empty database in its place
    copies = list(tmp_path.glob("project.sqlite.detached-*"))
    assert len(copies) == 1 and str(copies[0]) in str(e.value)
    with Store(copies[0]) as rescued:
        assert rescued.classes() == ["cat", "dog"]
    with Store(db) as fresh:  # the old session's write-ahead log did not leak into a new file
        assert fresh.classes() == [] and fresh.integrity_ok()


def test_a_database_replaced_under_a_writer_is_not_written(tmp_path: Path) -> None:
    db, other = tmp_path / "project.sqlite", tmp_path / "other.sqlite"
    s = Store(db)
    with Store(other) as o:
        o.ensure_classes(["x"])
    os.replace(other, db)
    with pytest.raises(DatabaseReplacedError, match="replaced"):
        s.set_meta("note", "written by the old session")
    s.close()
    with Store(db) as now:
        assert now.get_meta("note") is None and now.classes() == ["x"]


@pytest.mark.parametrize(
    ("code", "name", "free", "expect"),
    [
        (13, "SQLITE_FULL", 10 << 30, "is full"),
        (4874, "SQLITE_IOERR_SHMSIZE", 0, "is full"),
        (778, "SQLITE_IOERR_WRITE", 10 << 30, "failed a read or write"),
        (8, "SQLITE_READONLY", 10 << 30, "writable"),
    ],
)
def test_disk_errors_are_not_called_damage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: int, name: str,
                                           free: int, expect: str) -> None:
    monkeypatch.setattr(db_file, "free_bytes", lambda _d: free)
    err = explain_sqlite_error(tmp_path / "project.sqlite", _sqlite_error("disk I/O error", code, name), "open")
    assert isinstance(err, DatabaseDiskError)
    msg = str(err)
    assert expect in msg and str(tmp_path / "project.sqlite") in msg and name in msg
    assert "move it away" not in msg and "it is damaged" not in msg
    if expect == "is full":
        assert "free at least 1 MiB" in msg and "MiB free" in msg


def test_corruption_is_still_called_damage(tmp_path: Path) -> None:
    err = explain_sqlite_error(tmp_path / "p.sqlite", _sqlite_error("malformed", 11, "SQLITE_CORRUPT"), "open")
    assert isinstance(err, DamagedDatabaseError) and "backup" in str(err)


def _tiny_project(root: Path) -> Path:
    for cls in ("bag", "coat"):
        (root / cls).mkdir(parents=True)
        shutil.copy(sorted((SAMPLE / cls).iterdir())[0], root / cls)
    LabelingSession.open(root, config=ProjectConfig(image_size=64)).close()
    return root


def test_status_on_a_full_disk_simulated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The error SQLite gives when the disk holding the database is full, raised on open."""
    root = _tiny_project(tmp_path / "photos")

    def full(_conn: object, _path: object) -> None:
        raise _sqlite_error("disk I/O error", 4874, "SQLITE_IOERR_SHMSIZE")

    monkeypatch.setattr("labeltool.data.store.quick_check", full)
    monkeypatch.setattr(db_file, "free_bytes", lambda _d: 0)
    assert main(["status", str(root)]) == 2
    err = capsys.readouterr().err
    assert "is full" in err and str(root / ".labeltool") in err and "free at least 1 MiB" in err
    assert "move it away" not in err


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root and a kernel that lets this process mount)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_status_on_a_full_disk(small_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tiny_project(small_disk / "photos")
    filler = _fill(small_disk)
    assert main(["status", str(root)]) == 2
    err = capsys.readouterr().err
    assert "is full" in err and "free at least 1 MiB" in err and str(root / ".labeltool") in err
    assert "move it away" not in err and "it is damaged" not in err
    filler.unlink()
    assert main(["status", str(root)]) == 0  # the database was fine all along


def test_a_full_disk_on_write_is_an_os_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Callers that handle a full disk catch ``OSError``; the database's full disk is one too."""
    monkeypatch.setattr(db_file, "free_bytes", lambda _d: 0)
    err = explain_sqlite_error(tmp_path / "p.sqlite", _sqlite_error("full", 13, "SQLITE_FULL"), "write to")
    assert isinstance(err, OSError) and isinstance(err, RuntimeError)
    assert "this change was not saved" in str(err)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_a_write_on_a_full_disk_is_refused_and_loses_nothing(small_disk: Path) -> None:
    db = small_disk / "project.sqlite"
    s = Store(db)
    s.ensure_classes(["cat"])
    filler = _fill(small_disk)
    with pytest.raises(DatabaseDiskError, match="is full") as e:
        s.set_meta("note", "x" * 500_000)
    assert isinstance(e.value, OSError) and "this change was not saved" in str(e.value)
    filler.unlink()
    s.ensure_classes(["dog"])  # the same session goes on once there is room
    s.close()
    with Store(db) as again:
        assert again.classes() == ["cat", "dog"] and again.get_meta("note") is None and again.integrity_ok()

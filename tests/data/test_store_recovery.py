"""A damaged project database is a clear refusal, from the store and from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from labeltool.cli import main
from labeltool.config import ProjectConfig
from labeltool.data.store import Store
from labeltool.session import LabelingSession


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

"""A session's database cannot vanish under it: once ``project.sqlite`` is deleted or replaced,
the session's next write, from the CLI's connection or any of the app's threads, is refused."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from labeltool.config import ProjectConfig
from labeltool.errors import DatabaseReplacedError
from labeltool.session import LabelingSession
from tests.sample_helpers import SAMPLE


def _session(root: Path) -> LabelingSession:
    for cls in ("bag", "coat"):
        (root / cls).mkdir(parents=True)
        shutil.copy(sorted((SAMPLE / cls).iterdir())[0], root / cls)
    return LabelingSession.open(root, config=ProjectConfig(image_size=64))


def test_a_decision_after_the_database_was_deleted_is_refused(tmp_path: Path) -> None:
    """It used to be written into the deleted file and lost when the session closed."""
    with _session(tmp_path / "photos") as s:
        image = s.store.images()[0].id
        s.assign(image, "coat")
        s.project.db_path.unlink()
        with pytest.raises(DatabaseReplacedError, match="was deleted"):
            s.assign(image, "bag")
        assert not s.project.db_path.exists()
        copies = list(s.project.dir.glob("project.sqlite.detached-*"))
    assert len(copies) == 1  # the earlier decision is kept there


def test_the_apps_threads_do_not_open_a_new_empty_database(tmp_path: Path) -> None:
    s = _session(tmp_path / "photos")
    s.share_store_across_threads()
    assert s.classes == ["bag", "coat"]
    s.project.db_path.unlink()
    errors: list[BaseException] = []

    def page_run() -> None:
        try:
            s.add_class("dress")
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    worker = threading.Thread(target=page_run)
    worker.start()
    worker.join()
    s.close()
    assert len(errors) == 1 and isinstance(errors[0], DatabaseReplacedError)
    assert not s.project.db_path.exists()

"""Fixtures of the export and review-file tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from labeltool.config import ProjectConfig
from labeltool.session import LabelingSession


@pytest.fixture
def tiny_session(tmp_path: Path) -> Iterator[LabelingSession]:
    """``tmp_path/photos`` with ``bag/a-3.png``, ``bag/a.png`` (seed class ``bag``) and
    ``unlabeled/a.png``, opened at 64 px and not embedded (closed again at teardown)."""
    root = tmp_path / "photos"
    for rel in ("bag/a-3.png", "bag/a.png", "unlabeled/a.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), len(rel) * 9).save(root / rel)
    s = LabelingSession.open(root, config=ProjectConfig(image_size=64))
    yield s
    s.close()

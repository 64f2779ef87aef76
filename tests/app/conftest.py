"""Fixtures for the app tests: embedded (and trained) copies of the sample folder.

``embedded_sample`` (the sample embedded once at 64 px) comes from tests/conftest.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from app_helpers import FAST_TRAIN

from labeltool.config import SuggestConfig
from labeltool.session import LabelingSession


@pytest.fixture(scope="session")
def trained_sample(embedded_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded sample after one short round and a proposed batch of 24 (do not modify)."""
    root = tmp_path_factory.mktemp("app-trained") / "sample"
    shutil.copytree(embedded_sample, root)
    with LabelingSession.open(root) as s:
        s.train_round(FAST_TRAIN)
        s.propose(SuggestConfig(batch_size=24))
    return root


@pytest.fixture
def app_folder(embedded_sample: Path, tmp_path: Path) -> Path:
    """A private copy of the embedded sample (no rounds yet)."""
    return Path(shutil.copytree(embedded_sample, tmp_path / "sample"))


@pytest.fixture
def trained_folder(trained_sample: Path, tmp_path: Path) -> Path:
    """A private copy of the trained sample (24 suggestions waiting)."""
    return Path(shutil.copytree(trained_sample, tmp_path / "sample"))

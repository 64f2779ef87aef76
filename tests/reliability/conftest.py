"""Fixtures of the reliability tests: a small embedded project, the fork server, the numbers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crashkit import ForkServer, small_sample, write_stats

from labeltool.config import ProjectConfig
from labeltool.session import LabelingSession

from sample_helpers import SAMPLE, TEST_IMAGE_SIZE


@pytest.fixture(scope="session")
def small_embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 seed classes (3 images each) + 20 unlabeled images, embedded at 64 px (do not modify)."""
    root = small_sample(tmp_path_factory.mktemp("small") / "photos", SAMPLE, per_class=3, unlabeled=20)
    with LabelingSession.open(root, config=ProjectConfig(image_size=TEST_IMAGE_SIZE, embed_batch_size=4)) as s:
        s.embed(device="cpu", num_workers=0)
    return root


@pytest.fixture
def small_project(small_embedded: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`small_embedded`."""
    return Path(shutil.copytree(small_embedded, tmp_path / "photos", symlinks=True))


@pytest.fixture(scope="session")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("driver") / "driver.log")
    yield server
    server.close()


@pytest.fixture(scope="session")
def reliability_stats() -> Iterator[dict[str, Any]]:
    """Numbers collected by the tests; written to ``$LABELTOOL_RELIABILITY_STATS`` at the end."""
    stats: dict[str, Any] = {}
    yield stats
    write_stats(stats)

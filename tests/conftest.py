"""Shared fixtures: a copy of the bundled sample folder, embedded once per test run at 64 px."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from labeltool.config import ProjectConfig
from labeltool.session import LabelingSession

from sample_helpers import TEST_IMAGE_SIZE, copy_sample


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n N`` each worker computes on one thread (and so do the processes it starts):
    N workers on N cores instead of N x cores threads fighting over them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def embedded_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample folder whose project is created and embedded (do not modify; use ``project``)."""
    root = copy_sample(tmp_path_factory.mktemp("embedded") / "sample")
    with LabelingSession.open(root, config=ProjectConfig(image_size=TEST_IMAGE_SIZE)) as s:
        s.embed()
    return root


@pytest.fixture
def project(embedded_sample: Path, tmp_path: Path) -> Iterator[LabelingSession]:
    """A private, already embedded copy of the sample project, opened."""
    root = tmp_path / "sample"
    shutil.copytree(embedded_sample, root)
    with LabelingSession.open(root) as s:
        yield s


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for tests of tiny tensors and per-image transforms: faster, and immune
    to a busy CPU (the loader makes its items on one thread too)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

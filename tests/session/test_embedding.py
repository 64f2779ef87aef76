"""Embedding a project: labeled images first, a first sample now, the rest in a background job."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeltool.config import ProjectConfig
from labeltool.session import LabelingSession
from labeltool.session import embedding as session_embed

from sample_helpers import TEST_IMAGE_SIZE


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder, n in (("cats", 3), ("dogs", 3), ("", 14)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / folder / f"{folder}{i}.png")
    return root


def _wait_for_job(s: LabelingSession, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while (job := s.embed_job()) is not None and job.running and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.mark.slow
def test_the_first_embedding_covers_the_labels_and_a_sample_and_a_job_embeds_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_embed, "FIRST_EMBED_SAMPLE", 4)
    with LabelingSession.open(_folder(tmp_path / "images"), config=ProjectConfig(image_size=TEST_IMAGE_SIZE)) as s:
        first = s.embed_first()
        assert first.computed == 6 + 4
        labeled = {r.sha256 for r in s.store.images() if r.id in s.label_state().labels}
        assert labeled <= {h for h in s.pool().hashes}  # every labeled image is in the first pool
        job = s.embed_job()
        assert job is not None
        _wait_for_job(s)
        job = s.embed_job()
        assert job is not None and job.finished, (job, (s.project.cache_dir / "embed_job.log").read_text())
        assert job.done == 10 and s.missing_features() == 0 and len(s.pool().ids) == 20
        assert s.embed_job_progress_line() is None

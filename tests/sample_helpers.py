"""Helpers shared by the tests: where the bundled sample is and how to copy it."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
TEST_IMAGE_SIZE = 64  # small inputs keep the suite fast on a CPU; the real default is 224


def copy_sample(dest: Path) -> Path:
    """Copy the sample images (not any project folder) to ``dest``."""
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns(".labeltool"))
    return dest

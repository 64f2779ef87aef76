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


def mount(*args: str) -> None:
    """Run ``mount ARGS`` for a test that needs a real mount (a tmpfs, a read-only bind).

    Where it cannot run (not root, no mount rights) the test skips, since simulated tests cover
    the same paths; under CI as root a mount is expected to work, so its failure fails the test.
    """
    import os
    import subprocess

    import pytest

    try:
        done = subprocess.run(["mount", *args], capture_output=True, timeout=20)
        why = done.stderr.decode(errors="replace").strip() if done.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as e:
        why = str(e)
    if not why:
        return
    if os.environ.get("CI") and os.geteuid() == 0:
        pytest.fail(f"mount {' '.join(args)} failed as root: {why}")
    pytest.skip(f"cannot mount here ({why}); the simulated tests cover the same paths")

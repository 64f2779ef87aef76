"""Helpers shared by the app tests (AppTest set-up and store checks)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from labeltool.config import TrainConfig
from labeltool.session import LabelingSession

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
FAST_TRAIN = TrainConfig(epochs=5, min_steps=20, max_steps=20)


def make_app(folder: Path, tab: str = "Review") -> AppTest:
    """AppTest of app.py opened on ``folder``, UMAP off (it would compile in the background)."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["folder"] = str(folder)
    at.session_state["umap_auto"] = False
    at.session_state["tab"] = tab
    return at


def labeled_count(folder: Path) -> int:
    """Labels in the store, read through a separate connection."""
    with LabelingSession.open(folder) as s:
        return len(s.label_state().labels)


def no_trouble(at: AppTest) -> None:
    """No uncaught exception and no error message on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]

"""Shared settings of the loss tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread: None) -> None:
    """The loss tests use tiny tensors: one intra-op thread (the shared ``one_thread``)."""

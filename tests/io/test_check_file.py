"""Tests for labeltool.io.check_file: a round's anchor check survives a reopen."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labeltool.io.check_file import check_path, load_check, save_check
from labeltool.rounds.anchor_check import AnchorCheck


def test_round_trip_and_unreadable_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(3), size=(2, 5))
    check = AnchorCheck(np.array([0, 1, 2]), rng.dirichlet(np.ones(3), size=3), np.arange(10, 15), scores, 0.7,
                        np.array([0.6, 0.8]), np.array([0.01, -0.02]), -0.01)
    path = check_path(tmp_path, 3)
    save_check(path, check, np.array([10, 11]), np.array([2, 0]))
    loaded = load_check(path)
    assert loaded is not None
    back, ids, cls = loaded
    assert back.temperature == 0.7 and back.offset == -0.01
    np.testing.assert_array_equal(back.scores, scores)
    assert ids.tolist() == [10, 11] and cls.tolist() == [2, 0]
    np.testing.assert_allclose(back.right(np.array([11]), np.array([1]))[0], check.right(np.array([11]), np.array([1]))[0])
    assert load_check(tmp_path / "missing.npz") is None
    path.write_bytes(b"not an npz")
    assert load_check(path) is None

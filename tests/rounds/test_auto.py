"""Mode auto's scoring: which labeled rows each candidate is scored on, and how folds pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labeltool.config import TrainConfig
from labeltool.rounds import auto
from labeltool.rounds.choose import CV_BELOW, HOLDOUT, Candidate


def _labels(n_labeled: int, n_unlabeled: int = 30, classes: int = 5) -> np.ndarray:
    return np.concatenate([np.arange(n_labeled) % classes, np.full(n_unlabeled, -1)])


def test_a_small_labeled_set_is_cross_validated_a_large_one_held_out_once() -> None:
    small = _labels(100)
    masks = auto.holdouts(small, seed=0)
    assert len(masks) == 4
    times = np.sum(masks, axis=0)
    assert (times[:100] == 1).all() and (times[100:] == 0).all()  # every label once, never an unlabeled row
    large = _labels(CV_BELOW)
    (one,) = auto.holdouts(large, seed=0)
    assert not one[CV_BELOW:].any() and one.sum() == pytest.approx(HOLDOUT * CV_BELOW, abs=5)


def test_the_score_pools_the_folds_by_their_held_out_images(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = _labels(43)  # folds of unequal size
    masks = auto.holdouts(labels, seed=0)
    first = masks[0]

    def fold_score(features: Any, labels: np.ndarray, held: np.ndarray, config: TrainConfig) -> float:
        return 1.0 if np.array_equal(held, first) else 0.0  # right on the first fold only

    monkeypatch.setattr(auto, "score_head", fold_score)
    head = Candidate("head", None, "head")
    seen: list[str] = []
    choice = auto.choose_training([head], np.zeros((len(labels), 4)), [Path("x")] * len(labels), labels,
                                  TrainConfig(), lambda: None, progress=seen.append)  # type: ignore[arg-type,return-value]
    assert choice.n_held == 43 and choice.n_labeled == 43
    assert choice.scores["head"] == pytest.approx(first.sum() / 43)
    assert seen == [f"scoring head (fold {k} of 4)" for k in range(1, 5)]

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


def test_a_costlier_candidate_stops_once_it_cannot_catch_up(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = _labels(100)
    head, scratch = Candidate("head", None, "head"), Candidate("finetune", "hoffer_mnist", "scratch")
    monkeypatch.setattr(auto, "score_head", lambda *a: 0.8)
    folds: list[int] = []

    def scratch_score(*args: Any) -> float:
        folds.append(1)
        return 0.5

    monkeypatch.setattr(auto, "score_finetune", scratch_score)
    monkeypatch.setattr(auto, "create_backbone", lambda name: None)
    seen: list[str] = []
    choice = auto.choose_training([head, scratch], np.zeros((len(labels), 4)), [Path("x")] * len(labels), labels,
                                  TrainConfig(), lambda: None, progress=seen.append)  # type: ignore[arg-type,return-value]
    assert choice.candidate == head
    # after one fold 87.5% (88 of 100) is still reachable and would beat 80%; after two, at most 75%
    assert len(folds) == 2
    assert choice.scored_on == {"scratch": 50} and choice.scores["scratch"] == pytest.approx(0.5)
    assert seen[-1] == "scoring scratch (fold 2 of 4)"


def test_a_candidate_that_could_still_win_runs_every_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = _labels(100)
    head, scratch = Candidate("head", None, "head"), Candidate("finetune", "hoffer_mnist", "scratch")
    monkeypatch.setattr(auto, "score_head", lambda *a: 0.7)
    monkeypatch.setattr(auto, "score_finetune", lambda *a: 0.95)
    monkeypatch.setattr(auto, "create_backbone", lambda name: None)
    choice = auto.choose_training([head, scratch], np.zeros((len(labels), 4)), [Path("x")] * len(labels), labels,
                                  TrainConfig(), lambda: None)  # type: ignore[arg-type,return-value]
    assert choice.candidate == scratch and choice.scored_on == {}
    assert choice.scores == {"head": pytest.approx(0.7), "scratch": pytest.approx(0.95)}


def test_with_nothing_to_hold_out_the_cheapest_way_is_kept() -> None:
    labels = np.array([0, 1, 2, -1, -1])  # one labeled image per class
    head, scratch = Candidate("head", None, "head"), Candidate("finetune", "hoffer_mnist", "scratch")
    choice = auto.choose_training([head, scratch], np.zeros((5, 4)), [Path("x")] * 5, labels, TrainConfig(),
                                  lambda: None)  # type: ignore[arg-type,return-value]
    assert choice.candidate == head and choice.n_held == 0 and "no class has two labeled images" in choice.reason

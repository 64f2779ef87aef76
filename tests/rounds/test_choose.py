"""Mode auto's pure parts: candidates, hold-out split, the noise margin and the decision."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from labeltool.models.backbones import get_spec
from labeltool.rounds.choose import (
    REGROW,
    SCRATCH_CONSISTENCY,
    Candidate,
    Choice,
    candidates,
    decide,
    holdout_folds,
    margin,
    needs_decision,
    out_of_reach,
    stratified_holdout,
)

LITE = get_spec("efficientnet_lite0")


def test_candidates_depend_on_image_size_colour_and_device() -> None:
    big = candidates(LITE, 224, grayscale=False, cuda=False)
    assert [(c.mode, c.backbone) for c in big] == [("head", None)]  # end to end at 224 px is not tried on a CPU
    gpu = candidates(LITE, 224, grayscale=False, cuda=True)
    assert [(c.mode, c.backbone) for c in gpu] == [("head", None), ("finetune", None)]
    small_gray = candidates(replace(LITE, input_size=64), 28, grayscale=True, cuda=False)
    assert [(c.mode, c.backbone) for c in small_gray] == [("head", None), ("finetune", "hoffer_mnist")]
    small_gray_gpu = candidates(LITE, 28, grayscale=True, cuda=True)
    assert [(c.mode, c.backbone) for c in small_gray_gpu] == [("head", None), ("finetune", None),
                                                              ("finetune", "hoffer_mnist")]
    small_rgb = candidates(LITE, 32, grayscale=False, cuda=False)
    assert [c.backbone for c in small_rgb] == [None, "hoffer_cifar"]
    scratch = candidates(get_spec("hoffer_mnist"), 28, grayscale=True, cuda=False)
    assert [(c.mode, c.backbone) for c in scratch] == [("finetune", None)]  # never a head on random features


def test_stratified_holdout_keeps_every_class_in_training() -> None:
    labels = np.array([0] * 10 + [1] * 4 + [2] * 1 + [3] * 2)
    held = stratified_holdout(labels, 0.25, seed=3)
    assert held.dtype == bool and held.shape == labels.shape
    for c, n in [(0, 10), (1, 4), (2, 1), (3, 2)]:
        k = int(held[labels == c].sum())
        assert 0 <= k < n  # never all of a class
    assert held[labels == 0].sum() == 2 or held[labels == 0].sum() == 3  # about a quarter
    assert not held[labels == 2].any()  # a single image stays in training
    assert held[labels == 3].sum() == 1
    np.testing.assert_array_equal(held, stratified_holdout(labels, 0.25, seed=3))


def test_holdout_folds_hold_out_every_image_once_and_never_a_whole_class() -> None:
    labels = np.array([0] * 10 + [1] * 4 + [2] * 1 + [3] * 2 + [4] * 3)
    folds = holdout_folds(labels, 4, seed=1)
    assert len(folds) == 4 and all(f.dtype == bool and f.shape == labels.shape for f in folds)
    times = np.sum(folds, axis=0)
    assert (times[labels != 2] == 1).all() and (times[labels == 2] == 0).all()  # once; a lone image never
    for f in folds:
        for c in (0, 1, 3, 4):
            assert f[labels == c].sum() < (labels == c).sum()  # the class keeps training images
        assert 2 <= f[labels == 0].sum() <= 3  # stratified: a quarter of each class per fold
    assert all(np.array_equal(a, b) for a, b in zip(folds, holdout_folds(labels, 4, seed=1), strict=True))
    assert holdout_folds(np.array([0, 1]), 4, seed=0) == []  # nothing can be held out


def test_margin_shrinks_with_more_held_out_images() -> None:
    assert margin(0.8, 10) == pytest.approx(2 * np.sqrt(0.16 / 10))
    assert margin(0.8, 10) > margin(0.8, 100) > margin(0.8, 10_000)
    assert margin(1.0, 50) == pytest.approx(0.01)  # never below the tie
    assert margin(0.5, 0) == 1.0


def _offered() -> list[Candidate]:
    return [Candidate("head", None, "head"), Candidate("finetune", "hoffer_mnist", "scratch")]


def test_decide_prefers_the_cheaper_way_within_the_noise() -> None:
    head, scratch = _offered()
    few = decide({head: 0.80, scratch: 0.90}, _offered(), n_labeled=50, n_held=10)
    assert few.candidate == head and "within the noise" in few.reason
    many = decide({head: 0.80, scratch: 0.90}, _offered(), n_labeled=4000, n_held=1000)
    assert many.candidate == scratch
    assert many.reason.startswith("scratch scored 90% on 1000 held-out labels (vs head 80%)")
    assert many.scores == {"head": 0.80, "scratch": 0.90}
    with pytest.raises(ValueError, match="no candidate"):
        decide({}, _offered(), 10, 2)


def test_a_candidate_is_out_of_reach_only_when_no_rest_could_make_it_win() -> None:
    head, scratch = _offered()
    # 50 held out, the head scored 78%: 15 of the first 25 right can end at most at 80%, within its margin
    assert out_of_reach(0.78, 15, 25, 50)
    assert not out_of_reach(0.78, 7, 12, 50)  # 44 of 50 (88%) is still possible and would win
    assert not out_of_reach(0.78, 0, 50, 50)  # fully scored: nothing left to skip
    for right in range(26):  # the rule agrees with decide() on every way the last 25 could go
        if out_of_reach(0.78, right, 25, 50):
            for rest in range(26):
                assert decide({head: 0.78, scratch: (right + rest) / 50}, _offered(), 50, 50).candidate == head
    stopped = decide({head: 0.78, scratch: 0.6}, _offered(), 50, 50, scored_on={scratch: 25})
    assert stopped.candidate == head and stopped.scored_on == {"scratch": 25}
    assert "scratch 60% on the first 25, stopped: it could no longer catch up" in stopped.reason
    assert Choice.from_json(stopped.to_json()) == stopped
    old = stopped.to_json()
    del old["scored_on"]  # a choice recorded before scores could stop early
    assert Choice.from_json(old).scored_on == {}


def test_a_candidate_is_a_recipe_the_round_then_trains() -> None:
    from labeltool.config import TrainConfig
    from labeltool.rounds.auto import with_recipe

    head, scratch = candidates(LITE, 28, grayscale=True, cuda=False)
    assert scratch.consistency == SCRATCH_CONSISTENCY and head.consistency is None
    auto = TrainConfig(mode="auto", finetune={"steps": 9})
    cfg = with_recipe(auto, scratch)
    assert (cfg.mode, cfg.backbone) == ("finetune", "hoffer_mnist")
    assert cfg.finetune_config().consistency == SCRATCH_CONSISTENCY and cfg.finetune_config().steps == 9
    mine = with_recipe(TrainConfig(mode="auto", finetune={"consistency": 0.3}), scratch)
    assert mine.finetune_config().consistency == 0.3  # a weight the user set is kept
    assert with_recipe(auto, head).mode == "head" and with_recipe(auto, head).backbone is None
    choice = decide({head: 0.5, scratch: 0.9}, [head, scratch], 400, 100)
    assert Choice.from_json(choice.to_json()).candidate.consistency == SCRATCH_CONSISTENCY


def test_choice_round_trips_and_is_redecided_as_labels_grow() -> None:
    head, scratch = _offered()
    choice = decide({head: 0.7, scratch: 0.95}, _offered(), n_labeled=400, n_held=100)
    again = Choice.from_json(choice.to_json())
    assert again == choice
    assert needs_decision(None, 10, _offered())
    assert not needs_decision(choice, 400, _offered())
    assert not needs_decision(choice, int(REGROW * 400) - 1, _offered())
    assert needs_decision(choice, int(REGROW * 400), _offered())
    assert needs_decision(choice, 400, _offered()[:1])  # the chosen way is no longer on offer

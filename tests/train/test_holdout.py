"""Early stopping on held-out labels: the stratified split, the 1-NN score, best-state keeping,
and a fine-tuning run that returns its best state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from labeltool.config import FinetuneConfig
from labeltool.losses import create_loss
from labeltool.models.backbones import create_backbone
from labeltool.models.heads import ProjectionHead
from labeltool.train.finetune import finetune
from labeltool.train.holdout import BestState, HoldoutEval, holdout_split, nearest_neighbour_accuracy

from sample_helpers import SAMPLE

CLASSES = ("bag", "coat", "sandal", "trouser")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_split_is_stratified_and_deterministic() -> None:
    labels = np.repeat([0, 1, 2, 3], [10, 5, 2, 1])
    train, held = holdout_split(labels, 0.2, np.random.default_rng(3))
    assert [int((labels[held] == c).sum()) for c in range(4)] == [2, 1, 1, 0]  # >= 1 per class of >= 2, none of 1
    assert set(labels[train]) == {0, 1, 2, 3}  # every class keeps training images
    assert np.intersect1d(train, held).size == 0 and np.union1d(train, held).tolist() == list(range(len(labels)))
    again = holdout_split(labels, 0.2, np.random.default_rng(3))
    assert np.array_equal(again[0], train) and np.array_equal(again[1], held)
    other = holdout_split(np.repeat([0, 1], 50), 0.2, np.random.default_rng(4))[1]
    assert len(other) == 20 and not np.array_equal(other, holdout_split(np.repeat([0, 1], 50), 0.2,
                                                                         np.random.default_rng(5))[1])
    assert holdout_split(labels, 0.0, np.random.default_rng(3))[1].size == 0
    assert len(holdout_split(np.array([0, 0, 1, 1]), 0.9, np.random.default_rng(0))[1]) == 2  # n - 1 at most
    with pytest.raises(ValueError, match="fraction"):
        holdout_split(labels, 1.0, np.random.default_rng(0))


def test_nearest_neighbour_accuracy_is_cosine_1nn() -> None:
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    ref_labels = torch.tensor([0, 1, 2])
    query = torch.tensor([[5.0, 0.5], [0.1, 3.0], [-2.0, -1.0], [0.2, -0.1]])  # nearest: 0, 1, 2, 0
    assert nearest_neighbour_accuracy(ref, ref_labels, query, torch.tensor([0, 1, 2, 0])) == 1.0
    assert nearest_neighbour_accuracy(ref, ref_labels, query, torch.tensor([0, 1, 1, 1])) == 0.5


def test_best_state_keeps_the_best_and_counts_patience() -> None:
    lin = nn.Linear(2, 1)
    best = BestState(patience=2)
    scores = [0.5, 0.7, 0.7, 0.6]
    stops = []
    for step, score in enumerate(scores, 1):
        with torch.no_grad():
            lin.weight.fill_(step)
        stops.append(best.update(step * 10, score, [lin]))
    assert stops == [False, False, False, True]  # a tie is no improvement
    assert best.best == 0.7 and best.best_step == 20 and best.history == list(zip([10, 20, 30, 40], scores, strict=True))
    best.restore([lin])
    assert torch.all(lin.weight == 2.0)


def _labeled() -> list[tuple[Path, int]]:
    return [(p, c) for c, name in enumerate(CLASSES) for p in sorted((SAMPLE / name).glob("*.png"))[:5]]


def test_early_stopping_returns_the_best_state() -> None:
    backbone = create_backbone("hoffer_mnist")
    torch.manual_seed(0)
    head = ProjectionHead(128, 16, 32, 0.0)
    loss = create_loss("cross_entropy", num_classes=len(CLASSES), embedding_dim=16)
    cfg = FinetuneConfig(steps=16, classes_per_batch=4, samples_per_class=2, holdout=0.4, eval_every=2, patience=3,
                         head_lr=3e-2, seed=2, device="cpu", num_workers=0)
    res = finetune(backbone, head, loss, _labeled(), [], cfg)
    scores = [acc for _, acc in res.eval_history]
    assert res.holdout_accuracy == max(scores) and res.best_step == res.eval_history[int(np.argmax(scores))][0]
    assert scores[0] < max(scores) and scores[-1] < max(scores)  # rises, then falls: restoring matters
    assert res.stopped_early and res.steps == res.eval_history[-1][0] < 16 and len(res.losses) == res.steps
    assert res.eval_seconds > 0 and res.images == res.steps * 8

    labels = np.array([y for _, y in _labeled()])
    train, held = holdout_split(labels, 0.4, np.random.default_rng(2))  # the run's split (same seed)
    evaluator = HoldoutEval(backbone.spec, [p for p, _ in _labeled()], labels, train, held)
    model = nn.Sequential(res.backbone, res.head)
    assert evaluator.accuracy(model, torch.device("cpu"), None) == pytest.approx(res.holdout_accuracy, abs=1e-6)
    assert len(evaluator.held) == 8 and len(evaluator.reference) == 12  # 2 of 5 held out per class


def test_no_holdout_reports_nothing() -> None:
    backbone = create_backbone("hoffer_mnist")
    head = ProjectionHead(128, 16, 32, 0.0)
    loss = create_loss("cross_entropy", num_classes=len(CLASSES), embedding_dim=16)
    cfg = FinetuneConfig(steps=2, classes_per_batch=4, samples_per_class=2, device="cpu", num_workers=0)
    res = finetune(backbone, head, loss, _labeled(), [], cfg)
    assert res.holdout_accuracy is None and res.best_step is None and res.eval_history == []
    assert not res.stopped_early and res.steps == 2 and res.eval_seconds == 0.0
    with pytest.raises(ValueError, match="holdout"):
        FinetuneConfig(holdout=1.0)
    with pytest.raises(ValueError, match="eval_every"):
        FinetuneConfig(eval_every=0)
    with pytest.raises(ValueError, match="patience"):
        FinetuneConfig(patience=0)

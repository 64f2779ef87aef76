"""Tests for labeltool.rounds.step: the one round pipeline, over arrays."""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.eval.prevalence import estimate_shares, remaining_shares
from labeltool.rounds.step import POOL_PRECISION, RoundInputs, RoundState, continues, pool_rows, step, suggest
from labeltool.suggest.propose import propose
from labeltool.train.head import class_probabilities, embed_features, new_head_and_loss, train_head

CLASSES = ["a", "b", "c"]


def problem(n: int = 90, f: int = 16, labeled: int = 5, seed: int = 0) -> RoundInputs:
    """Three Gaussian blobs ``[n, f]``; ``labeled`` rows per class carry their label, the rest -1."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    x = (rng.normal(size=(n, f)) + 3.0 * np.eye(3, f)[y]).astype(np.float32)
    labels = np.full(n, -1, dtype=np.int64)
    for c in range(3):
        labels[np.flatnonzero(y == c)[:labeled]] = c
    return RoundInputs(np.arange(100, 100 + n, dtype=np.int64), x, labels, CLASSES)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread

CFG = TrainConfig(max_steps=15, min_steps=15, seed=3, device="cpu", embedding_dim=8, hidden_dim=32)


def test_head_step_is_train_embed_probabilities_propose() -> None:
    """The step computes exactly what its parts compute when called by hand."""
    inputs = problem()
    scfg = SuggestConfig(batch_size=12)
    res = step(inputs, CFG, suggest_config=scfg, with_metrics=False)
    ref = train_head(inputs.features, inputs.labels, 3, CFG)
    emb = embed_features(ref.head, inputs.features, device="cpu", precision=POOL_PRECISION)
    probs = class_probabilities(ref.loss, emb)
    assert probs is not None and res.probs is not None
    np.testing.assert_array_equal(res.embeddings, emb)
    np.testing.assert_array_equal(res.probs, probs)
    shares = estimate_shares(inputs.features, inputs.labels, inputs.labels >= 0, 3)
    assert shares is not None
    left = remaining_shares(shares, np.bincount(inputs.labels[inputs.labels >= 0], minlength=3), 90)
    assert res.suggestions == propose(emb, inputs.labels, inputs.ids, scfg, probs=probs, num_classes=3, shares=left)
    unbalanced = replace(scfg, balance="none")
    plain = step(inputs, CFG, suggest_config=unbalanced, with_metrics=False)
    assert plain.suggestions == propose(emb, inputs.labels, inputs.ids, unbalanced, probs=probs, num_classes=3)
    assert res.proposal is not None and res.proposal.suggestions == res.suggestions
    assert len(res.suggestions) == 12 and not res.continued and res.backbone is None
    assert res.facts["steps"] == ref.steps and res.facts["n_pool"] == 90 and res.metrics == {}


def test_step_continues_the_previous_head_and_moments() -> None:
    inputs = problem()
    first = step(inputs, CFG, with_metrics=False)
    kept = copy.deepcopy(first.state)  # training continues the modules in place
    second = step(inputs, CFG, first.state, with_metrics=False)
    ref = train_head(inputs.features, inputs.labels, 3, CFG, init=(kept.head, kept.loss),
                     optimizer_state=kept.optimizer_state)
    assert second.continued
    np.testing.assert_array_equal(second.embeddings,
                                  embed_features(ref.head, inputs.features, device="cpu", precision=POOL_PRECISION))


def test_a_finetuned_previous_round_is_not_continued_in_head_mode() -> None:
    head, loss = new_head_and_loss(16, 3, CFG)
    prev = RoundState(head, loss, None, finetuned=True)
    assert not continues(CFG, prev, 16, 3)
    assert continues(CFG, RoundState(head, loss, None, finetuned=False), 16, 3)
    ft = TrainConfig(mode="finetune", device="cpu")
    assert continues(ft, prev, 16, 3) and not continues(ft, prev, 32, 3)  # the head must fit the features
    assert not continues(TrainConfig(loss="triplet", mode="finetune"), prev, 16, 3)  # and the loss
    assert not continues(CFG, None, 16, 3)


def test_step_metrics_and_labels_are_its_own() -> None:
    inputs = problem()
    labels = inputs.labels
    res = step(inputs, CFG)
    labels[:] = 0  # the caller relabels its array after the round
    assert (res.labels >= 0).sum() == 15
    assert res.metrics["n_labeled"] == 15 and res.metrics["num_classes"] == 3
    assert 0.0 <= res.metrics["loo_1nn_accuracy"] <= 1.0
    assert res.facts["round_seconds"] >= res.facts["train_seconds"] >= 0.0


def test_pool_rows_finds_each_id_in_the_pool() -> None:
    pool = np.array([40, 7, 19, 3, 88], dtype=np.int64)
    np.testing.assert_array_equal(pool_rows(pool, np.array([3, 40, 88])), [3, 0, 4])
    np.testing.assert_array_equal(pool_rows(pool, pool.copy()), np.arange(5))
    assert pool_rows(pool, np.zeros(0, dtype=np.int64)).size == 0


def test_suggest_never_proposes_a_rejected_pair() -> None:
    inputs = problem()
    res = step(inputs, CFG, with_metrics=False)
    best = suggest(res, SuggestConfig(batch_size=None))
    top = best[0]
    again = suggest(res, SuggestConfig(batch_size=None), rejected=[(top.image_id, top.class_id)])
    assert (top.image_id, top.class_id) not in {(s.image_id, s.class_id) for s in again}


def test_step_refuses_what_it_cannot_train(tmp_path: Path) -> None:
    one_class = problem()
    labels = one_class.labels.copy()
    labels[labels > 0] = -1
    with pytest.raises(ValueError, match="at least 2 classes, found 1"):
        step(RoundInputs(one_class.ids, one_class.features, labels, CLASSES), CFG)
    with pytest.raises(ValueError, match="needs the pool's images"):
        step(problem(), TrainConfig(mode="finetune", device="cpu"))
    with pytest.raises(ValueError, match="disagree"):
        RoundInputs(np.arange(3), np.zeros((4, 2), np.float32), np.zeros(4, np.int64), CLASSES)


def test_step_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    step(problem(), CFG, suggest_config=SuggestConfig())
    assert os.listdir(tmp_path) == []

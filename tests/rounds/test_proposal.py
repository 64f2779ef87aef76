"""Tests for labeltool.rounds.proposal: the stated precision checked on verified labels."""

from __future__ import annotations

import numpy as np
import pytest
from round_helpers import CFG, pool, seeded

from labeltool.config import SuggestConfig
from labeltool.rounds.anchor_check import MIN_ANCHORS, anchor_check
from labeltool.rounds.proposal import propose_round, reviews_to_reach
from labeltool.rounds.step import RoundInputs, step

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread


def run(x: np.ndarray, y: np.ndarray, labels: np.ndarray, anchors: np.ndarray, batch: int = 40):  # noqa: ANN201
    ids = np.arange(y.size, dtype=np.int64)
    inputs = RoundInputs(ids, x, labels, [str(c) for c in range(int(y.max()) + 1)], anchors=anchors)
    return step(inputs, CFG, suggest_config=SuggestConfig(batch_size=batch), with_metrics=False)


def test_the_stated_precision_follows_the_truth_for_a_clean_and_a_corrupted_labeling() -> None:
    x, y = pool()
    labels = seeded(y, 15)
    anchors = labels >= 0
    res = run(x, y, labels, anchors)
    prop = res.proposal
    assert prop is not None and prop.check is not None and len(prop.suggestions) == 40
    s_ids = np.array([s.image_id for s in prop.suggestions])
    true = float((np.array([s.class_id for s in prop.suggestions]) == y[s_ids]).mean())
    # heads trained on 4/5 of the anchors know less than the round's head: the estimate errs low
    assert true - 0.2 < prop.batch.value < true + 0.03 and prop.batch.low <= prop.batch.value <= prop.batch.high
    # a trusting reviewer accepted 60 wrong labels (class 0 images taken as class 1): the same
    # seed now states a lower precision, because the check never trusts unreviewed labels
    bad = labels.copy()
    wrong = np.flatnonzero((y == 0) & (labels < 0))[:40]
    bad[wrong] = 1
    worse = run(x, y, bad, anchors).proposal
    assert worse is not None and worse.check is not None
    w_ids = np.array([s.image_id for s in worse.suggestions])
    w_true = float((np.array([s.class_id for s in worse.suggestions]) == y[w_ids]).mean())
    assert w_true < true and worse.batch.value < prop.batch.value and worse.batch.value < w_true + 0.03
    assert worse.coverage is not None and prop.coverage is not None
    assert worse.coverage.accuracy.value < prop.coverage.accuracy.value


def test_without_enough_anchors_the_estimate_says_it_is_uncalibrated() -> None:
    x, y = pool()
    labels = seeded(y, 3)  # 12 anchors < MIN_ANCHORS
    assert (labels >= 0).sum() < MIN_ANCHORS
    prop = run(x, y, labels, labels >= 0).proposal
    assert prop is not None and prop.check is None
    assert np.isnan(prop.batch.low) and "uncalibrated" in prop.batch.basis
    assert anchor_check(x, labels, np.arange(y.size), labels >= 0, 4, CFG, 3) is None
    assert anchor_check(x, seeded(y, 6), np.arange(y.size), seeded(y, 6) >= 0, 4, CFG, 0) is None


def test_reviews_to_reach() -> None:
    assert reviews_to_reach(np.array([1.0, 1.0, 1.0]), 0.99) == 0
    assert reviews_to_reach(np.array([0.0, 1.0, 1.0, 1.0]), 0.99) == 1
    assert reviews_to_reach(np.array([0.5, 0.5, 0.9, 1.0]), 0.9) == 2  # (2 + 0.9 + 1) / 4 = 0.975
    assert reviews_to_reach(np.zeros(0), 0.99) == 0


def test_coverage_line_starts_as_the_status_command_prints_it() -> None:
    x, y = pool()
    labels = seeded(y, 6)
    prop = run(x, y, labels, labels >= 0).proposal
    assert prop is not None and prop.coverage is not None
    line = prop.coverage.line()
    assert line.startswith("estimated accuracy of the remainder: ")
    assert prop.coverage.remaining == int((labels < 0).sum())
    assert 0 <= prop.coverage.reviews_needed <= prop.coverage.remaining


def test_a_proposal_carries_its_check_heads_and_share_neighbours_to_the_next() -> None:
    x, y = pool()
    labels = seeded(y, 6)
    first = run(x, y, labels, labels >= 0).proposal
    assert first is not None and first.check is not None and first.check.heads is not None
    res = run(x, y, labels, labels >= 0)
    again = propose_round(x, labels, np.arange(y.size), res.embeddings, res.probs, np.arange(y.size), 4,
                          [str(c) for c in range(4)], CFG, SuggestConfig(batch_size=40), carried=first.carried)
    assert again.check is not None and again.check.heads is not None
    assert all(a is b for a, b in zip(again.check.heads.results, first.check.heads.results, strict=True))
    assert again.neighbours is first.neighbours  # no new anchor: nothing searched
    np.testing.assert_array_equal(again.shares, first.shares)

"""Tests for labeltool.rounds.proposal: the stated precision checked on verified labels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.rounds import proposal
from labeltool.rounds.proposal import _POOL_SAMPLE, MIN_ANCHORS, anchor_check, reviews_to_reach
from labeltool.rounds.step import RoundInputs, step

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread

CFG = TrainConfig(max_steps=100, min_steps=100, seed=0, device="cpu", embedding_dim=8, hidden_dim=32)


def pool(n_per: int = 60, classes: int = 4, overlap: float = 1.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs ``[n_per·C, 16]``; ``overlap`` sets how often neighbours disagree."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per)
    x = rng.normal(size=(y.size, 16)) * overlap + 3.0 * np.eye(classes, 16)[y]
    return x.astype(np.float32), y


def seeded(y: np.ndarray, per: int) -> np.ndarray:
    labels = np.full(y.size, -1, dtype=np.int64)
    for c in np.unique(y):
        take = np.flatnonzero(y == c)[:per]
        labels[take] = c
    return labels


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


@pytest.mark.parametrize("folds", [2, 5])
def test_every_anchor_is_held_out_once(folds: int) -> None:
    x, y = pool()
    labels = seeded(y, 6)
    check = anchor_check(x, labels, np.arange(y.size), labels >= 0, 4, CFG, folds)
    assert check is not None and check.held_truth.size == (labels >= 0).sum()
    assert check.ids.size == (labels < 0).sum() and check.scores.shape == (folds, check.ids.size, 4)
    np.testing.assert_allclose(check.scores.sum(2), 1.0, atol=1e-6)


def test_a_round_that_trained_a_network_from_scratch_is_checked_on_the_pool_features() -> None:
    """The round's own network (mode finetune, backbone set) does not leak into the check's heads."""
    x, y = pool()
    labels = seeded(y, 6)
    scratch = replace(CFG, mode="finetune", backbone="hoffer_mnist")
    check = anchor_check(x, labels, np.arange(y.size), labels >= 0, 4, scratch, 3)
    assert check is not None and check.held_truth.size == (labels >= 0).sum()


class CountingRows:
    """Features ``[N, F]`` that count how often each row is read."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.read = x, np.zeros(len(x), dtype=np.int64)
        self.shape, self.ndim, self.dtype = x.shape, 2, x.dtype

    def __getitem__(self, key: np.ndarray) -> np.ndarray:
        self.read[np.arange(len(self.x))[key]] += 1
        return self.x[key]


def test_the_check_reads_each_row_once_for_all_folds_and_scores_as_from_arrays() -> None:
    x, y = pool()
    labels = seeded(y, 6)
    rows = CountingRows(x.astype(np.float16))
    quick = replace(CFG, min_steps=3, max_steps=3)
    check = anchor_check(rows, labels, np.arange(y.size), labels >= 0, 4, quick, 3)
    assert check is not None and rows.read.max() == 1 and rows.read.sum() == y.size
    again = anchor_check(x.astype(np.float16), labels, np.arange(y.size), labels >= 0, 4, quick, 3)
    assert again is not None
    np.testing.assert_array_equal(check.scores, again.scores)
    assert check.temperature == again.temperature


def test_a_pool_over_the_sample_size_is_scored_on_a_sample_with_or_without_extra_rows() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, _POOL_SAMPLE + 50)
    x = (rng.normal(size=(y.size, 4)) + 3.0 * np.eye(2, 4)[y]).astype(np.float16)
    labels = np.full(y.size, -1, dtype=np.int64)
    labels[:30] = y[:30]
    quick = replace(CFG, min_steps=2, max_steps=2)
    ids = np.arange(y.size)
    plain = anchor_check(x, labels, ids, labels >= 0, 2, quick, 2)
    assert plain is not None and plain.ids.size == _POOL_SAMPLE and plain.ids.dtype.kind == "i"
    extra = np.arange(_POOL_SAMPLE + 40, _POOL_SAMPLE + 50)
    with_extra = anchor_check(x, labels, ids, labels >= 0, 2, quick, 2, extra=extra)
    assert with_extra is not None and set(extra.tolist()) <= set(with_extra.ids.tolist())


@pytest.mark.parametrize("round_width", [32, 1024])
def test_fold_heads_are_at_most_fold_hidden_wide(monkeypatch: pytest.MonkeyPatch, round_width: int) -> None:
    """The check's heads take the round's width, capped at FOLD_HIDDEN (their cost is most of a round's)."""
    widths: list[int] = []
    real = proposal.train_head

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        widths.append(args[3].hidden_dim)
        return real(*args, **kwargs)

    monkeypatch.setattr(proposal, "train_head", spy)
    x, y = pool()
    labels = seeded(y, 6)
    quick = replace(CFG, min_steps=2, max_steps=2, hidden_dim=round_width)
    assert anchor_check(x, labels, np.arange(y.size), labels >= 0, 4, quick, 3) is not None
    assert widths == [min(round_width, proposal.FOLD_HIDDEN)] * 3


def _grown(labels: np.ndarray, y: np.ndarray, more: int) -> np.ndarray:
    """``labels`` with the first ``more`` unlabeled images of each class labeled too."""
    out = labels.copy()
    for c in np.unique(y):
        out[np.flatnonzero((y == c) & (labels < 0))[:more]] = c
    return out


@pytest.mark.parametrize("change", ["added", "relabelled", "removed", "other features", "other config"])
def test_fold_heads_are_trained_afresh_when_the_anchors_the_features_or_the_config_changed(change: str) -> None:
    x, y = pool()
    ids = np.arange(y.size)
    labels = seeded(y, 6)
    first = anchor_check(x, labels, ids, labels >= 0, 4, CFG, 3, features_key="f")
    assert first is not None
    labels, key, cfg = labels.copy(), "f", CFG
    some = int(np.flatnonzero(labels >= 0)[0])
    if change == "added":
        labels = _grown(labels, y, 1)
    elif change == "relabelled":
        labels[some] = (labels[some] + 1) % 4
    elif change == "removed":
        labels[some] = -1
    elif change == "other features":
        key = "g"
    else:
        cfg = replace(CFG, lr=CFG.lr / 2)
    again = anchor_check(x, labels, ids, labels >= 0, 4, cfg, 3, previous=first.heads, features_key=key)
    assert again is not None and again.heads is not None
    assert not any(a is b for a, b in zip(again.heads.results, first.heads.results, strict=True))
    assert [r.steps for r in again.heads.results if r is not None] == [CFG.max_steps] * 3


def test_the_same_anchors_reuse_the_fold_heads_and_their_folds_as_they_are() -> None:
    """Reused heads give what heads trained afresh with the same folds give (for a loss that
    ignores unlabeled rows); the images scored may differ (here: four more labeled, not anchors)."""
    x, y = pool()
    ids = np.arange(y.size)
    labels = seeded(y, 6)
    anchors = labels >= 0
    first = anchor_check(x, labels, ids, anchors, 4, CFG, 3, seed=1, features_key="f")
    assert first is not None and first.heads is not None
    accepted = _grown(labels, y, 1)  # labels accepted without review: not anchors
    again = anchor_check(x, accepted, ids, anchors, 4, CFG, 3, seed=2, previous=first.heads, features_key="f")
    assert again is not None and again.heads is not None
    assert all(a is b for a, b in zip(again.heads.results, first.heads.results, strict=True))
    assert again.heads.fold_of == first.heads.fold_of  # seed 2 would have dealt other folds
    fresh = anchor_check(x, accepted, ids, anchors, 4, CFG, 3, seed=1, features_key="f")
    assert fresh is not None
    np.testing.assert_array_equal(again.held_scores, fresh.held_scores)
    np.testing.assert_array_equal(again.scores, fresh.scores)

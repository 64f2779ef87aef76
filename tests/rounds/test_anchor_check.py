"""Tests for labeltool.rounds.anchor_check: heads trained on the verified labels alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from round_helpers import CFG, pool, seeded

from labeltool.rounds import anchor_check as anchor_check_module
from labeltool.rounds.anchor_check import _POOL_SAMPLE, anchor_check

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread


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
    real = anchor_check_module.train_head

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        widths.append(args[3].hidden_dim)
        return real(*args, **kwargs)

    monkeypatch.setattr(anchor_check_module, "train_head", spy)
    x, y = pool()
    labels = seeded(y, 6)
    quick = replace(CFG, min_steps=2, max_steps=2, hidden_dim=round_width)
    assert anchor_check(x, labels, np.arange(y.size), labels >= 0, 4, quick, 3) is not None
    assert widths == [min(round_width, anchor_check_module.FOLD_HIDDEN)] * 3


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

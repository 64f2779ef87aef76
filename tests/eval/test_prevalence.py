"""Tests for labeltool.eval.prevalence: class shares from the anchors alone, and balance flags."""

from __future__ import annotations

import numpy as np
import pytest

from labeltool.eval.prevalence import (
    anchor_neighbours,
    balance_flags,
    estimate_shares,
    remaining_shares,
    shares_from,
)


def blobs(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    x = rng.normal(size=(y.size, 8)) * 0.3 + 4.0 * np.eye(len(sizes), 8)[y]
    return x.astype(np.float32), y


def test_shares_come_from_the_anchors_not_from_the_other_labels() -> None:
    x, y = blobs([60, 30, 10])
    labels = np.full(y.size, -1)
    anchors = np.zeros(y.size, dtype=bool)
    for c in range(3):
        first = np.flatnonzero(y == c)[:3]
        labels[first], anchors[first] = c, True
    shares = estimate_shares(x, labels, anchors, 3)
    assert shares is not None
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1], atol=1e-9)
    # every class-0 image wrongly labeled 1 without review: the estimate does not move
    wrong = labels.copy()
    wrong[(y == 0) & ~anchors] = 1
    np.testing.assert_allclose(estimate_shares(x, wrong, anchors, 3), shares)
    assert estimate_shares(x, labels, anchors & (y == 0), 3) is None  # one anchor class only


def test_remaining_shares_subtract_what_is_labeled() -> None:
    left = remaining_shares(np.array([0.5, 0.5]), np.array([50, 0]), 100)
    np.testing.assert_allclose(left, [0.0, 1.0])
    np.testing.assert_allclose(remaining_shares(np.array([0.5, 0.5]), np.array([50, 50]), 100), [0.5, 0.5])


def test_balance_flags_name_the_class_that_took_over_and_the_one_that_starves() -> None:
    classes = ["coat", "shirt", "bag"]
    flags = balance_flags(np.array([8, 82, 45]), np.array([1 / 3, 1 / 3, 1 / 3]), 135, classes)
    assert [f.class_id for f in flags] == [0, 1] or [f.class_id for f in flags] == [1, 0]
    text = " ".join(f.message for f in flags)
    assert "'shirt' has 82 labels" in text and "'coat' has 8 labels" in text
    assert balance_flags(np.array([45, 45, 45]), np.array([1 / 3] * 3), 135, classes) == []
    # early on, few labels overall: a class not labeled yet is not flagged as starving
    assert balance_flags(np.array([5, 5, 0]), np.array([1 / 3] * 3), 135, classes) == []


@pytest.mark.parametrize("bad", [np.array([-0.1, 1.1]), np.array([np.nan, 1.0])])
def test_quota_shares_are_validated(bad: np.ndarray) -> None:
    from labeltool.suggest.select import class_quotas

    with pytest.raises(ValueError):
        class_quotas(bad, 10)


def _overlapping(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three overlapping blobs ``x [300, 8]``, ``y [300]``, and 4 anchors per class as ``labels``."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), 100)
    x = (rng.normal(size=(y.size, 8)) + 1.5 * np.eye(3, 8)[y]).astype(np.float32)
    labels = np.full(y.size, -1)
    for c in range(3):
        labels[np.flatnonzero(y == c)[:4]] = c
    return x, y, labels


def test_neighbours_extended_with_new_anchors_are_those_of_a_full_search() -> None:
    x, y, labels = _overlapping()
    ids = np.arange(y.size) + 1000
    first = anchor_neighbours(x, labels, labels >= 0, ids, features_key="f")
    assert first is not None
    more = labels.copy()
    for c in range(3):
        more[np.flatnonzero((y == c) & (labels < 0))[:6]] = c
    grown = anchor_neighbours(x, more, more >= 0, ids, previous=first, features_key="f")
    full = anchor_neighbours(x, more, more >= 0, ids, features_key="f")
    assert grown is not None and full is not None
    np.testing.assert_array_equal(grown.anchor_ids, full.anchor_ids)
    np.testing.assert_allclose(grown.dist, full.dist, rtol=1e-6)
    np.testing.assert_array_equal(shares_from(grown, more, more >= 0, 3), shares_from(full, more, more >= 0, 3))
    assert anchor_neighbours(x, more, more >= 0, ids, previous=grown, features_key="f") is grown  # nothing new


@pytest.mark.parametrize("change", ["relabelled", "removed", "other features", "pool grew"])
def test_neighbours_are_searched_afresh_when_an_anchor_or_the_sample_changed(change: str) -> None:
    x, y, labels = _overlapping()
    ids = np.arange(y.size)
    first = anchor_neighbours(x, labels, labels >= 0, ids, features_key="f")
    labels, key = labels.copy(), "f"
    some = int(np.flatnonzero(labels >= 0)[0])
    if change == "relabelled":
        labels[some] = 2
    elif change == "removed":
        labels[some] = -1
    elif change == "other features":
        key = "g"
    else:
        x, labels, ids = np.concatenate([x, x[:5] + 0.01]), np.concatenate([labels, [-1] * 5]), np.arange(y.size + 5)
    again = anchor_neighbours(x, labels, labels >= 0, ids, previous=first, features_key=key)
    full = anchor_neighbours(x, labels, labels >= 0, ids, features_key=key)
    assert again is not None and full is not None and again is not first
    np.testing.assert_array_equal(again.anchor_ids, full.anchor_ids)
    assert again.anchors == full.anchors

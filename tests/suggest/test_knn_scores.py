"""kNN class confidences: the weighted vote share and the 1-NN score."""

from __future__ import annotations

import numpy as np
import pytest

from labeltool.suggest.knn_scores import knn_class_scores, vote_temperature


def test_vote_ranks_close_unanimous_neighbours_above_distant_ones() -> None:
    d = np.array([[0.1, 0.2, 0.3], [1.0, 1.5, 2.0], [5.0, 6.0, 7.0], [5000.0, 6000.0, 7000.0]])
    cls = np.zeros((4, 3), dtype=np.int64)  # every row unanimous for class 0
    scores, _ = knn_class_scores(d, cls, 4, tau=1.0)
    conf = scores[:, 0]
    assert np.all(np.diff(conf) < 0)  # strictly decreasing with distance: no ties at the top
    assert conf[0] < (3 + 1 / 4) / (3 + 1) + 1e-12  # bounded by (k + prior/C) / (k + prior)
    assert conf[-1] == pytest.approx(1 / 4)  # nothing close: the prior alone
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="prior"):
        knn_class_scores(d, cls, 4, tau=1.0, prior=-1.0)
    # far from everything (a tiny tau, e.g. a pool of near-duplicates): the majority still wins
    far, seen = knn_class_scores(np.array([[900.0, 950.0, 990.0]]), np.array([[0, 2, 2]]), 4, tau=0.01)
    assert int(np.where(seen, far, -1).argmax()) == 2 and far[0, 2] == pytest.approx(1 / 4)


def test_knn_class_scores_1nn_and_vote_temperature() -> None:
    scores, seen = knn_class_scores(np.array([[0.5, 1.0, 3.0]]), np.array([[2, 0, 2]]), 3, mode="1nn")
    np.testing.assert_allclose(scores, [[1 / 2.0, 0.0, 1 / 1.5]])
    assert seen.tolist() == [[True, False, True]]
    assert vote_temperature(np.array([0.0, 0.0, 0.0, 2.0, 4.0])) == pytest.approx(3.0)
    assert vote_temperature(np.zeros(3)) == 1.0
    assert vote_temperature(np.array([1.0, 2.0, 5.0])) == 2.0
    with pytest.raises(ValueError, match="mode"):
        knn_class_scores(np.zeros((1, 1)), np.zeros((1, 1), int), 2, mode="mean")
    with pytest.raises(ValueError, match="neighbor_classes"):
        knn_class_scores(np.zeros((1, 1)), np.full((1, 1), 5), 2)

"""Tests for labeltool.rounds.current: which stored suggestions are still pending."""

from __future__ import annotations

from labeltool.data.store import StoredSuggestion
from labeltool.rounds.current import pending_suggestions


def test_pending_leaves_out_labeled_images_and_rejected_pairs_and_ranks_anew() -> None:
    stored = [StoredSuggestion(1, i, c, 1.0 - i / 10, "knn", i, None, ()) for i, c in [(1, 0), (2, 1), (3, 0), (4, 2)]]
    out = pending_suggestions(stored, labels={2: 1}, rejected={(3, 0)})
    assert [(s.image_id, s.class_id, s.rank) for s in out] == [(1, 0, 0), (4, 2, 1)]
    assert out[1].confidence == stored[3].confidence and out[1].source == "knn"

"""Tests for labeltool.eval.review: how suggestions fared, from the decision log."""

from __future__ import annotations

from labeltool.data.decisions import Decision
from labeltool.eval.review import review_stats


def test_review_stats_counts_in_force_decisions_only() -> None:
    log = [
        Decision(1, 10, 0, "accept", 1, 1, None, 0.9, 0.0),
        Decision(2, 11, 1, "accept", 1, 1, None, 0.7, 0.0),
        Decision(3, 12, 1, "reject", 1, 2, None, None, 0.0),
        Decision(4, 13, 0, "accept", 1, 3, None, 0.1, 0.0),
        Decision(5, 13, None, "undo", None, 4, 4, None, 0.0),
    ]
    assert review_stats(log) == {"reviewed": 3, "accepted": 2, "rejected": 1, "acceptance_rate": 0.6667,
                                 "mean_conf_accepted": 0.8}
    assert review_stats([])["acceptance_rate"] is None and review_stats([])["mean_conf_accepted"] is None

"""Tests for labeltool.data.anchors: which labels a person verified."""

from __future__ import annotations

from labeltool.data.anchors import verified_images
from labeltool.data.decisions import Decision, replay


def dec(i: int, image: int, cls: int | None, action: str, rnd: int | None = 1, undoes: int | None = None) -> Decision:
    return Decision(i, image, cls, action, rnd, i, undoes, None, float(i))


def test_seeds_and_hand_labels_are_verified_blind_accepts_are_not() -> None:
    seeds = {1: 0, 2: 1}
    log = [dec(1, 10, 0, "accept"), dec(2, 11, 1, "accept"), dec(3, 12, 0, "assign"), dec(4, 13, 1, "pseudo")]
    assert verified_images(replay(seeds, log), log) == {1, 2, 12}


def test_a_round_with_a_correction_makes_its_accepts_verified() -> None:
    seeds = {1: 0}
    log = [dec(1, 10, 0, "accept", rnd=1), dec(2, 11, 1, "relabel", rnd=1), dec(3, 11, 0, "reject", rnd=1),
           dec(4, 20, 0, "accept", rnd=2)]
    assert verified_images(replay(seeds, log), log) == {1, 10, 11}
    # undoing the only correction takes the proof away again
    undone = [*log, dec(5, 11, None, "undo", undoes=2), dec(6, 11, None, "undo", undoes=3)]
    assert verified_images(replay(seeds, undone), undone) == {1}


def test_a_seed_relabelled_later_follows_its_newest_decision() -> None:
    seeds = {1: 0}
    log = [dec(1, 1, 1, "accept", rnd=3)]
    assert verified_images(replay(seeds, log), log) == set()  # a blind accept replaced the seed label
    log2 = [dec(1, 1, 1, "assign", rnd=None)]
    assert verified_images(replay(seeds, log2), log2) == {1}


def test_round_reviews_count_only_rounds_with_a_rejection() -> None:
    from labeltool.data.anchors import round_reviews

    log = [dec(1, 10, 0, "accept", rnd=1), dec(2, 11, 1, "accept", rnd=1), dec(3, 12, 0, "reject", rnd=1),
           dec(4, 12, 2, "relabel", rnd=1), dec(5, 20, 0, "accept", rnd=2)]
    assert round_reviews(log) == {1: (2, 1)}
    assert round_reviews([*log, dec(6, 12, None, "undo", undoes=3)]) == {}

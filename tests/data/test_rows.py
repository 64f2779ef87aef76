"""Typed rows of the store: what a round's record says about how it trained."""

from __future__ import annotations

from labeltool.data.rows import RoundRow


def test_a_round_record_says_whether_it_trained_end_to_end() -> None:
    def row(config: dict[str, object]) -> RoundRow:
        return RoundRow(1, 0.0, 1.0, config, {})

    assert row({"mode": "finetune", "train": {"mode": "finetune"}}).trained_end_to_end
    assert not row({"train": {"mode": "head"}, "feature_key": "k"}).trained_end_to_end
    assert not row({}).trained_end_to_end  # a round started before anything was recorded

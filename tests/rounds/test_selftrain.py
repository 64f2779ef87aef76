"""Headless self-training rounds: what each round hears and reports, on a stand-in project."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.data.decisions import LabelState
from labeltool.rounds.selftrain import run_selftrain
from labeltool.suggest.propose import Suggestion


class _Loop:
    """Two rounds' worth of a project: the first proposes one image, the second nothing."""

    classes = ["a", "b"]

    def __init__(self) -> None:
        self.recorded: list[dict[str, Any]] = []
        self.rounds = 0

    def image_rows(self) -> dict[int, Any]:
        return {}

    def add_class(self, name: str) -> int:
        raise AssertionError("no oracle, no new class")

    def train_round(self, config: TrainConfig, *, on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
        self.rounds += 1
        if on_stage is not None:
            on_stage(f"Mode auto: scoring round {self.rounds}")
        return {"round": self.rounds, "train_seconds": 0.1, "round_seconds": 0.2}

    def propose(self, config: SuggestConfig) -> list[Suggestion]:
        return [Suggestion(7, 1, 0.9, "knn", 0.1, (1,), 0)] if self.rounds == 1 else []

    def record(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        self.recorded.extend(rows)
        return list(range(len(rows)))

    def label_state(self) -> LabelState:
        return LabelState(labels={7: 1} if self.recorded else {})

    def stats(self) -> dict[str, Any]:
        return {"labeled": len(self.recorded), "unlabeled": 5}

    def annotate_round(self, round_id: int, extra: dict[str, Any]) -> None:
        pass


def test_every_round_passes_its_stages_on_and_plain_self_training_accepts_unreviewed() -> None:
    loop, stages = _Loop(), list[str]()
    reports = run_selftrain(loop, 3, TrainConfig(), SuggestConfig(), on_stage=stages.append)
    assert stages == ["Mode auto: scoring round 1", "Mode auto: scoring round 2"]  # stops when nothing is proposed
    assert [r.proposed for r in reports] == [1, 0]
    assert loop.recorded == [{"image_id": 7, "class_id": 1, "action": "pseudo", "round": 1, "confidence": 0.9}]

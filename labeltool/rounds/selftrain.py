"""Headless self-training rounds, optionally with a simulated reviewer answering from ground truth.

With an oracle, each round's suggestions are reviewed: right ones are accepted, wrong ones are
rejected and (by default) corrected to the true class. Without an oracle every suggestion is
accepted unreviewed as a ``pseudo`` label (plain self-training, the Sahito et al. protocol).
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from labeltool.config import SelftrainConfig, SuggestConfig, TrainConfig
from labeltool.data.decisions import LabelState
from labeltool.data.scan import RelpathIndex
from labeltool.data.store import ImageRow
from labeltool.eval.metrics import label_accuracy
from labeltool.suggest.propose import Suggestion


class LabelingLoop(Protocol):
    """What a self-training run needs of a project (``LabelingSession`` provides it)."""

    @property
    def classes(self) -> list[str]: ...
    def image_rows(self) -> dict[int, ImageRow]: ...
    def add_class(self, name: str) -> int: ...
    def train_round(self, config: TrainConfig, *, on_stage: Callable[[str], None] | None = None) -> dict[str, Any]: ...
    def propose(self, config: SuggestConfig) -> list[Suggestion]: ...
    def record(self, rows: Sequence[dict[str, Any]]) -> list[int]: ...
    def label_state(self) -> LabelState: ...
    def stats(self) -> dict[str, Any]: ...
    def annotate_round(self, round_id: int, extra: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RoundReport:
    """One self-training round, as the CLI prints it."""

    round: int
    proposed: int
    accepted: int
    corrected: int
    rejected: int
    precision: float | None  # accepted / proposed (needs an oracle)
    labeled: int
    unlabeled: int
    label_accuracy: float | None  # of all current labels that the oracle knows
    loo_1nn_accuracy: float | None
    train_seconds: float
    round_seconds: float


def read_oracle(path: str | Path) -> dict[str, str]:
    """Ground truth CSV with columns ``path`` (relative to the image folder) and ``label``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"oracle file {p} does not exist")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{p}: missing column(s) {sorted(missing)}; expected a header 'path,label'")
        out: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            path = (row["path"] or "").strip()
            label = unicodedata.normalize("NFC", (row["label"] or "").strip())  # as class names are
            if not path or not label:
                raise ValueError(f"{p}:{line}: empty path or label")
            out[path.replace("\\", "/")] = label
    return out


def oracle_ids(session: LabelingLoop, oracle: Mapping[str, str]) -> dict[int, int]:
    """Image id → true class id for the oracle rows that name a known image (new classes are added)."""
    by_path = RelpathIndex({r.relpath: r.id for r in session.image_rows().values()})
    found = {image_id: lab for p, lab in oracle.items() if (image_id := by_path.find(p)) is not None}
    unknown_classes = sorted(set(found.values()) - set(session.classes))
    for name in unknown_classes:
        session.add_class(name)
    cid = {c: i for i, c in enumerate(session.classes)}
    return {image_id: cid[lab] for image_id, lab in found.items()}


def run_selftrain(
    session: LabelingLoop,
    rounds: int,
    train_config: TrainConfig,
    suggest_config: SuggestConfig,
    *,
    oracle: Mapping[str, str] | None = None,
    reviewer: str = SelftrainConfig.reviewer,
    on_round: Callable[[RoundReport], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> list[RoundReport]:
    """Run ``rounds`` rounds of train → propose → review; stops early when nothing is left.

    ``reviewer`` (with an oracle): ``correct`` accepts right suggestions and relabels wrong ones
    with the true class; ``reject`` only rejects wrong ones; ``none`` accepts everything unreviewed
    (plain self-training) and uses the oracle only to measure precision. ``on_stage`` hears
    what a round does before it trains (mode ``auto`` scoring its candidates).
    """
    SelftrainConfig(rounds=rounds, reviewer=reviewer)  # validates both
    truth = oracle_ids(session, oracle) if oracle is not None else None
    reports: list[RoundReport] = []
    for _ in range(rounds):
        metrics = session.train_round(train_config, on_stage=on_stage)
        suggestions = session.propose(suggest_config)
        rows, (accepted, corrected, rejected) = simulated_review(suggestions, truth, reviewer, metrics["round"])
        if rows:
            session.record(rows)
        state = session.label_state()
        acc = label_accuracy(state.labels, truth)["accuracy"] if truth is not None else None
        stats = session.stats()
        report = RoundReport(
            round=metrics["round"], proposed=len(suggestions), accepted=accepted, corrected=corrected,
            rejected=rejected,
            precision=((len(suggestions) - rejected) / len(suggestions)) if truth is not None and suggestions else None,
            labeled=stats["labeled"], unlabeled=stats["unlabeled"], label_accuracy=acc,
            loo_1nn_accuracy=metrics.get("loo_1nn_accuracy"), train_seconds=metrics["train_seconds"],
            round_seconds=metrics["round_seconds"],
        )
        session.annotate_round(metrics["round"], {"selftrain": asdict(report)})
        reports.append(report)
        if on_round:
            on_round(report)
        if not suggestions or stats["unlabeled"] == 0:
            break
    return reports


def simulated_review(
    suggestions: Sequence[Suggestion], truth: Mapping[int, int] | None, reviewer: str, round_id: int,
) -> tuple[list[dict[str, Any]], tuple[int, int, int]]:
    """The decision rows a simulated reviewer records for a batch, and its (accepted, corrected,
    rejected) counts. Without ``truth``, or with ``reviewer="none"``, every suggestion is taken
    unreviewed as a ``pseudo`` label (the wrong ones counted as rejected when ``truth`` is known)."""
    if truth is None or reviewer == "none":
        rows = [{"image_id": s.image_id, "class_id": s.class_id, "action": "pseudo", "round": round_id,
                 "confidence": s.confidence} for s in suggestions]
        wrong = sum(1 for s in suggestions if truth.get(s.image_id) != s.class_id) if truth is not None else 0
        return rows, (len(suggestions), 0, wrong)
    rows, accepted, corrected, rejected = [], 0, 0, 0
    for s in suggestions:
        true = truth.get(s.image_id)
        if true is None:
            continue  # the oracle does not know this image: leave it for later
        base = {"image_id": s.image_id, "round": round_id, "confidence": s.confidence}
        if true == s.class_id:
            rows.append({**base, "class_id": s.class_id, "action": "accept"})
            accepted += 1
            continue
        rows.append({**base, "class_id": s.class_id, "action": "reject"})
        rejected += 1
        if reviewer == "correct":
            rows.append({**base, "class_id": true, "action": "relabel"})
            corrected += 1
    return rows, (accepted, corrected, rejected)

"""Mode ``auto``: how a round learns, chosen by held-out accuracy on the labeled images.

The candidates (:func:`candidates`) are a head on the project backbone's frozen features and,
where they can run in reasonable time, networks trained end to end: the project backbone
fine-tuned (on a GPU only: on a CPU it costs minutes per round and, measured on
Fashion-MNIST with 100 labels, started 7 points below the head), and a small network trained
from scratch when the images are small (median side of at most 64 px; grayscale →
``hoffer_mnist``, colour → ``hoffer_cifar``), which also learns from the unlabeled images by
consistency training (on MNIST with 100 labels, 1,500 steps: 98.6% with it, 98.1% without in
3,000; benchmarks/README.md section 5), so its score is that of the rounds it would run. Each is trained on the same stratified
part of the labeled images and scored on the rest (:func:`score_embeddings`: 1-NN in its
embedding, the rule every loss supports); with fewer than ``CV_BELOW`` labeled images every
labeled image is held out once over ``FOLDS`` folds (:func:`holdout_folds`) and the scores pool
them, since a single hold-out of 25 labels cannot see a 20-point gap (measured on MNIST with 100
labels: benchmarks/README.md section 5); :func:`decide` keeps the best, preferring the
cheaper one (earlier in the list) unless the best beats it by more than the noise of the
held-out accuracy (:func:`margin`). A choice is kept until the labeled
set has grown by ``REGROW`` (:func:`needs_decision`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from labeltool.eval.metrics import knn_accuracy
from labeltool.models.backbones import BackboneSpec

__all__ = [
    "CV_BELOW", "FOLDS", "HOLDOUT", "REGROW", "SCRATCH_CONSISTENCY", "SMALL_IMAGE", "TIE", "Candidate", "Choice", "candidates", "decide", "margin",
    "holdout_folds", "needs_decision", "out_of_reach", "score_embeddings", "stratified_holdout",
]

SMALL_IMAGE = 64  # px: images this small get a from-scratch network among the candidates
HOLDOUT = 0.25  # fraction of the labeled images held out to score the candidates
CV_BELOW = 400  # fewer labeled images than this: cross-validate, FOLDS folds (each candidate trains FOLDS times)
FOLDS = 4  # = 1 / HOLDOUT: every labeled image held out once
REGROW = 1.5  # re-decide once the labeled set is this many times the one the choice saw
TIE = 0.01  # a cheaper candidate within this accuracy of the best one wins


SCRATCH_CONSISTENCY = 1.0  # a from-scratch candidate learns from the unlabeled images too (FixMatch weight)


@dataclass(frozen=True)
class Candidate:
    """One way to learn: ``mode`` (``"head"`` or ``"finetune"``), the network it trains
    (``backbone`` None = the project's) and ``consistency``, the FixMatch weight it trains with
    (None: the round's own setting)."""

    mode: str
    backbone: str | None
    label: str
    consistency: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Choice:
    """The candidate chosen, every candidate's held-out accuracy (by label), and why.
    ``scored_on``: the held-out labels a score covers where it is fewer than ``n_held`` (a
    candidate whose scoring stopped once it could no longer be picked, :func:`out_of_reach`)."""

    candidate: Candidate
    scores: dict[str, float]
    n_labeled: int
    n_held: int
    reason: str
    scored_on: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_json(), "scores": dict(self.scores), "n_labeled": self.n_labeled,
                "n_held": self.n_held, "reason": self.reason, "scored_on": dict(self.scored_on)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Choice:
        c = data["candidate"]
        return Choice(Candidate(str(c["mode"]), c.get("backbone"), str(c["label"]), c.get("consistency")),
                      {str(k): float(v) for k, v in data["scores"].items()}, int(data["n_labeled"]),
                      int(data["n_held"]), str(data["reason"]),
                      {str(k): int(v) for k, v in (data.get("scored_on") or {}).items()})


def candidates(spec: BackboneSpec, median_side: float, grayscale: bool, cuda: bool) -> list[Candidate]:
    """The ways to learn worth trying for images with ``median_side`` px and the project
    backbone ``spec``, cheapest first."""
    out = [Candidate("head", None, f"frozen {spec.name} features + head")] if spec.pretrained else []
    if not spec.pretrained:
        out.append(Candidate("finetune", None, f"{spec.name} trained from scratch"))
    elif cuda:
        out.append(Candidate("finetune", None, f"{spec.name} fine-tuned end to end"))
    if median_side <= SMALL_IMAGE and spec.pretrained:
        net = "hoffer_mnist" if grayscale else "hoffer_cifar"
        out.append(Candidate("finetune", net, f"{net} trained from scratch + consistency", SCRATCH_CONSISTENCY))
    return out


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask ``[L]`` over ``labels`` ``[L]`` holding out about ``fraction`` of every
    class that has at least 2 images (at least one each, never all of a class)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 2:
            continue
        k = min(len(rows) - 1, max(1, int(round(fraction * len(rows)))))
        held[rng.choice(rows, size=k, replace=False)] = True
    return held


def holdout_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` boolean masks ``[L]`` over ``labels`` ``[L]`` that hold out every image of a
    class with at least 2 images exactly once, stratified (a class's images spread over the
    folds, so no fold holds out all of a class); classes of one image are never held out."""
    rng = np.random.default_rng(seed)
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 2:
            continue
        fold_of[rng.permutation(rows)] = (np.arange(len(rows)) + int(rng.integers(folds))) % folds
    return [fold_of == f for f in range(folds) if bool((fold_of == f).any())]


def score_embeddings(train: np.ndarray, train_labels: np.ndarray, held: np.ndarray, held_labels: np.ndarray,
                     normalize: bool) -> float:
    """Held-out accuracy: 1-NN of ``held`` ``[H, D]`` among ``train`` ``[T, D]``."""
    return knn_accuracy(train, train_labels, held, held_labels, normalize=normalize)


def needs_decision(previous: Choice | None, n_labeled: int, offered: Sequence[Candidate]) -> bool:
    """Whether to score the candidates again: no choice yet, other candidates on offer, or a
    labeled set ``REGROW`` times the one the previous choice saw."""
    if previous is None or previous.candidate not in offered:
        return True
    if set(previous.scores) != {c.label for c in offered}:
        return True
    return n_labeled >= REGROW * max(1, previous.n_labeled)


def margin(accuracy: float, n_held: int) -> float:
    """How much a costlier candidate must beat a cheaper one by: twice the standard error of a
    held-out accuracy on ``n_held`` images (at least ``TIE``), so 10 held-out labels never
    decide on one image's luck."""
    if n_held <= 0:
        return 1.0
    return max(TIE, 2.0 * math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n_held))


def out_of_reach(best_other: float, right: float, seen: int, n_held: int) -> bool:
    """Whether a candidate with ``right`` of the first ``seen`` of ``n_held`` held-out labels
    right can no longer be picked over one that scored ``best_other`` on all of them, whatever
    it scores on the rest: every accuracy it could end with stays within :func:`margin` of
    ``best_other`` (:func:`decide` would keep the cheaper one). Scoring it further is wasted."""
    if seen >= n_held:
        return False
    finals = (right + np.arange(n_held - seen + 1)) / n_held
    return all(x - margin(float(x), n_held) <= best_other for x in finals)


def decide(scores: Mapping[Candidate, float], offered: Sequence[Candidate], n_labeled: int, n_held: int,
           why_not: Mapping[str, str] | None = None, scored_on: Mapping[Candidate, int] | None = None) -> Choice:
    """The best-scoring candidate of ``offered`` (the cheapest within :func:`margin` of the
    best), with a sentence saying why; ``why_not`` names candidates left out and the reason,
    ``scored_on`` the candidates scored on fewer than ``n_held`` labels (stopped early)."""
    scored = [c for c in offered if c in scores]
    if not scored:
        raise ValueError("no candidate was scored")
    part = {c: int(k) for c, k in (scored_on or {}).items() if c in scores and int(k) < n_held}
    best = max(scores[c] for c in scored)
    pick = next(c for c in scored if scores[c] >= best - margin(best, n_held))
    others = [c for c in scored if c != pick]
    if others:
        rest = ", ".join(f"{c.label} {100 * scores[c]:.0f}%" + (
            f" on the first {part[c]}, stopped: it could no longer catch up" if c in part else "") for c in others)
        reason = f"{pick.label} scored {100 * scores[pick]:.0f}% on {n_held} held-out labels (vs {rest})"
    else:
        reason = f"{pick.label} ({100 * scores[pick]:.0f}% on {n_held} held-out labels) is the only candidate"
    if scores[pick] < best:
        reason += (f"; the better score is within the noise of {n_held} held-out labels "
                   f"(±{100 * margin(best, n_held):.0f} points), so the cheaper way wins")
    for label, why in (why_not or {}).items():
        reason += f"; {label}: {why}"
    as_labels = {c.label: float(scores[c]) for c in scored}
    return Choice(pick, as_labels, n_labeled, n_held, reason, {c.label: k for c, k in part.items()})

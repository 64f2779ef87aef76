"""A round's proposal with the evidence to trust it: the batch, its estimated precision, the
coverage meter and the class balance.

The precision is stated from the anchor check (:mod:`labeltool.rounds.anchor_check`: heads
trained on the verified labels alone). Where batches were reviewed (rounds with a rejection),
how far their stated precision fell short of what review found corrects the next estimate
(``bias``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.eval.calibration import BatchEstimate, batch_estimate
from labeltool.eval.prevalence import (
    AnchorNeighbours,
    anchor_neighbours,
    balance_flags,
    remaining_shares,
    shares_from,
)
from labeltool.models.heads import released_reads
from labeltool.rounds.anchor_check import MIN_ANCHORS, AnchorCheck, FoldHeads, anchor_check
from labeltool.suggest.propose import Suggestion, candidates, suggestions_from

__all__ = ["MIN_ANCHORS", "AnchorCheck", "Carried", "Coverage", "FoldHeads", "Proposal", "anchor_check",
           "coverage_from", "propose_round", "reviews_to_reach", "uncalibrated"]


def reviews_to_reach(probabilities: np.ndarray, target: float) -> int:
    """Fewest reviews, least certain first, after which the expected fraction right of the
    ``[U]`` images reaches ``target`` (a review makes its image right)."""
    p = np.sort(np.asarray(probabilities, dtype=np.float64))
    if p.size == 0:
        return 0
    # after k reviews: (k + sum of the p's not reviewed) / U
    tail = np.concatenate([np.cumsum(p[::-1])[::-1], [0.0]])
    expected = (np.arange(p.size + 1) + tail) / p.size
    return int(np.argmax(expected >= target - 1e-12))


@dataclass(frozen=True)
class Coverage:
    """If every remaining image took its current suggestion unreviewed: how right the result would
    be (``accuracy`` with its interval, over ``remaining`` images, ``without_suggestion`` of which
    have none and count as wrong), and the reviews still needed to reach ``target``."""

    accuracy: BatchEstimate
    remaining: int
    without_suggestion: int
    reviews_needed: int
    target: float

    def line(self) -> str:
        a = self.accuracy
        span = "" if np.isnan(a.low) else f" [{a.low:.2f}, {a.high:.2f}]"
        return (f"estimated accuracy of the remainder: {a.value:.2f}{span} over {self.remaining} image(s); "
                f"{self.reviews_needed} review(s) to reach {self.target:.0%}")


@dataclass(frozen=True)
class Carried:
    """What a proposal computed that the next may reuse while the anchors and features allow
    (:meth:`~labeltool.rounds.anchor_check.FoldHeads.same`,
    :func:`~labeltool.eval.prevalence.anchor_neighbours`): the check's fold heads and the shares'
    anchor neighbours."""

    fold_heads: FoldHeads | None = None
    neighbours: AnchorNeighbours | None = None


@dataclass
class Proposal:
    """The batch and what it rests on (see the module docstring). ``candidate_*`` ``[M]`` hold
    the best allowed class and raw confidence of every unlabeled image that has one."""

    suggestions: list[Suggestion]
    batch: BatchEstimate
    check: AnchorCheck | None
    coverage: Coverage | None
    shares: np.ndarray | None
    flags: list[str] = field(default_factory=list)
    candidate_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    candidate_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    candidate_confidences: np.ndarray = field(default_factory=lambda: np.zeros(0))
    neighbours: AnchorNeighbours | None = field(default=None, repr=False)  # behind ``shares``

    @property
    def carried(self) -> Carried:
        """What the next proposal may reuse of this one (see :func:`propose_round`)."""
        return Carried(None if self.check is None else self.check.heads, self.neighbours)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures for the round record."""
        b, cov = self.batch, self.coverage
        return {
            "batch_precision": {"value": b.value, "low": b.low, "high": b.high, "size": b.size, "basis": b.basis},
            "held_out_accuracy": None if self.check is None else self.check.accuracy,
            "held_out_n": 0 if self.check is None else int(self.check.held_truth.size),
            "temperature": None if self.check is None else self.check.temperature,
            "coverage": None if cov is None else {
                "value": cov.accuracy.value, "low": cov.accuracy.low, "high": cov.accuracy.high,
                "remaining": cov.remaining, "without_suggestion": cov.without_suggestion,
                "reviews_needed": cov.reviews_needed, "target": cov.target},
            "shares": None if self.shares is None else [round(float(s), 5) for s in self.shares],
            "balance_flags": list(self.flags),
        }


def uncalibrated(confidences: np.ndarray, n_anchors: int, extra_wrong: int = 0) -> BatchEstimate:
    """The raw mean confidence, said to be uncalibrated (no interval)."""
    conf = np.asarray(confidences, dtype=np.float64)
    m = conf.size + extra_wrong
    value = float(conf.sum() / m) if m else float("nan")
    return BatchEstimate(value, float("nan"), float("nan"), int(conf.size),
                         f"uncalibrated mean confidence: {n_anchors} verified label(s) to hold out, "
                         f"{MIN_ANCHORS} needed (label a few more by hand)")


def propose_round(features: Any, labels: np.ndarray, ids: np.ndarray, embeddings: np.ndarray,
                  probs: np.ndarray | None, emb_rows: np.ndarray, num_classes: int, classes: list[str],
                  train: TrainConfig, suggest: SuggestConfig, *, anchors: np.ndarray | None = None,
                  rejected: Iterable[tuple[int, int]] = (), knn_backend: str = "auto", seed: int = 0,
                  bias: float = 0.0, carried: Carried | None = None, features_key: str = "") -> Proposal:
    """Propose a batch and say how far to trust it.

    ``features [N, F]`` frozen features, ``labels [N]``, ``ids [N]`` of the pool; ``embeddings
    [M, D]`` and ``probs [M, C]`` (or None) of the round for pool rows ``emb_rows [M]`` (all of
    them in head mode). ``anchors [N]`` bool marks the labels a person chose (default: all).
    ``bias`` (from :func:`~labeltool.eval.calibration.review_bias`: how far earlier stated
    precisions fell short of what review found) is added to every probability the check states.
    ``carried`` (the previous proposal's :attr:`Proposal.carried`) and ``features_key`` (which
    feature space ``features`` are) let unchanged work carry over: see :func:`anchor_check` and
    :func:`~labeltool.eval.prevalence.anchor_neighbours`."""
    carried = carried or Carried()
    labels = np.asarray(labels, dtype=np.int64)
    features = released_reads(features)  # the sampled rows leave no memory-mapped pages behind
    anchors = labels >= 0 if anchors is None else np.asarray(anchors, dtype=bool) & (labels >= 0)
    near = anchor_neighbours(features, labels, anchors, ids, seed=seed, knn_backend=knn_backend,
                             previous=carried.neighbours, features_key=features_key)
    shares = None if near is None else shares_from(near, labels, anchors, num_classes)
    counts = np.bincount(labels[labels >= 0], minlength=num_classes)
    left = None if shares is None else remaining_shares(shares, counts, labels.size)
    cand = candidates(embeddings, labels[emb_rows], ids[emb_rows], suggest, rejected=rejected, probs=probs,
                      num_classes=num_classes, knn_backend=knn_backend)
    rows = [] if cand is None else suggestions_from(cand, left)
    s_ids = np.array([r.image_id for r in rows], dtype=np.int64)
    s_cls = np.array([r.class_id for r in rows], dtype=np.int64)
    check = anchor_check(features, labels, ids, anchors, num_classes, train, suggest.calibration_folds,
                         extra=np.flatnonzero(np.isin(ids, s_ids)), seed=seed, knn_backend=knn_backend,
                         previous=carried.fold_heads, features_key=features_key)
    if check is not None and bias:
        check = replace(check, offset=check.offset + bias, shift=check.shift + bias)
    n_left = int((labels < 0).sum())
    coverage = None
    if check is None:
        batch = uncalibrated(np.array([r.confidence for r in rows]), int(anchors.sum()))
        if cand is not None and n_left:
            acc = uncalibrated(cand.confidences, int(anchors.sum()), max(n_left - cand.image_ids.size, 0))
            probs_left = np.concatenate([cand.confidences, np.zeros(max(n_left - cand.image_ids.size, 0))])
            coverage = Coverage(acc, n_left, max(n_left - cand.image_ids.size, 0),
                                reviews_to_reach(probs_left, suggest.target_accuracy), suggest.target_accuracy)
    else:
        p, bp = check.right(s_ids, s_cls)
        batch = batch_estimate(p, bp, check.describe())
        coverage = _coverage(check, cand, n_left, suggest.target_accuracy)
    flags = [] if shares is None else [f.message for f in balance_flags(counts, shares, labels.size, classes)]
    out = Proposal(rows, batch, check, coverage, shares, flags, neighbours=near)
    if cand is not None:
        out.candidate_ids, out.candidate_classes, out.candidate_confidences = (cand.image_ids, cand.classes,
                                                                               cand.confidences)
    return out


def _coverage(check: AnchorCheck, cand: Any, n_left: int, target: float) -> Coverage:
    """The coverage meter of a fresh proposal (see :func:`coverage_from`)."""
    if cand is None:
        return coverage_from(check, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), n_left, target)
    keep = np.isin(cand.image_ids, check.ids)
    return coverage_from(check, cand.image_ids[keep], cand.classes[keep], n_left, target)


def coverage_from(check: AnchorCheck, c_ids: np.ndarray, c_cls: np.ndarray, n_left: int, target: float,
                  scored: tuple[np.ndarray, np.ndarray] | None = None) -> Coverage:
    """The coverage meter: ``c_ids [M]`` the scored unlabeled images (``check.ids``) that have a
    suggestion, ``c_cls [M]`` its class; the scored images stand for all ``n_left`` unlabeled ones.
    ``scored``: ``check.right(c_ids, c_cls)`` when the caller already has it."""
    without = check.ids.size - c_ids.size  # scored images with no allowed class left
    p, bp = scored if scored is not None else check.right(c_ids, c_cls)
    acc = batch_estimate(p, bp, check.describe(), extra_wrong=without)
    scale = n_left / max(check.ids.size, 1)
    needed = reviews_to_reach(np.concatenate([p, np.zeros(without)]), target)
    return Coverage(acc, n_left, int(round(without * scale)), int(round(needed * scale)), target)

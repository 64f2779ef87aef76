"""Non-UI logic behind the app's Review and Dataset pages, as plain functions.

- the review queue: filter by class, sort by confidence, pages;
- the estimated precision of the shown batch, calibrated on earlier reviews when there are enough;
- disputed labels: labeled images whose nearest labeled neighbours in the current embedding
  vote for another class.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from labeltool.data.decisions import Decision, cancelled_ids
from labeltool.data.store import StoredSuggestion
from labeltool.eval.calibration import calibration_table, estimated_precision
from labeltool.suggest.knn import knn_search
from labeltool.suggest.propose import Suggestion

T = TypeVar("T")

ORDERS: tuple[str, ...] = ("high first", "low first", "rank")
MIN_CALIBRATION_REVIEWS = 30  # fewer reviewed suggestions than this: use the raw mean confidence


# ---------------------------------------------------------------------------- review queue
def filter_sort(suggestions: Iterable[Suggestion], class_id: int | None = None, order: str = "high first") -> list[Suggestion]:
    """Suggestions of one class (``None`` = all), ordered by confidence or by rank.

    Equal confidences keep the order ``propose`` ranked them in (reversed for ``"low first"``),
    then go by image id: a probability that rounded to 1.0 still has a ranking behind it.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    rows = [s for s in suggestions if class_id is None or s.class_id == class_id]
    if order == "rank":
        return sorted(rows, key=lambda s: (s.rank, s.image_id))
    sign = -1 if order == "high first" else 1
    return sorted(rows, key=lambda s: (sign * s.confidence, -sign * s.rank, s.image_id))


def page_of(items: Sequence[T], page: int, page_size: int) -> tuple[list[T], int, int]:
    """``(items of the page, number of pages, the page actually shown)``; the page is clamped."""
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    pages = max(1, math.ceil(len(items) / page_size))
    page = min(max(0, int(page)), pages - 1)
    return list(items[page * page_size : (page + 1) * page_size]), pages, page


def class_counts(suggestions: Iterable[Suggestion], classes: Sequence[str]) -> dict[str, int]:
    """Suggestions awaiting review per class name."""
    counts = Counter(s.class_id for s in suggestions)
    return {name: counts.get(i, 0) for i, name in enumerate(classes)}


# ---------------------------------------------------------------------------- precision
def reviewed_outcomes(
    log: Sequence[Decision], suggestions_of: dict[int, list[StoredSuggestion]]
) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence [M], accepted [M])`` of every suggestion a reviewer has settled (not undone).

    ``suggestions_of`` maps a round id to its stored suggestions. An accept of the suggested class
    counts as accepted; a reject of it (with or without a corrected class) as not accepted.
    """
    cancelled = cancelled_ids(log)
    by_round = {rid: {s.image_id: s for s in rows} for rid, rows in suggestions_of.items()}
    outcome: dict[tuple[int, int], tuple[float, bool]] = {}
    for d in log:
        if d.id in cancelled or d.round is None or d.action not in ("accept", "reject"):
            continue
        s = by_round.get(d.round, {}).get(d.image_id)
        if s is None or s.class_id != d.class_id:
            continue
        outcome[(d.round, d.image_id)] = (s.confidence, d.action == "accept")
    if not outcome:
        return np.zeros(0), np.zeros(0, dtype=bool)
    conf, acc = zip(*outcome.values(), strict=True)
    return np.asarray(conf, dtype=np.float64), np.asarray(acc, dtype=bool)


@dataclass(frozen=True)
class PrecisionEstimate:
    """Estimated precision of a batch, its 90% interval (NaN when uncalibrated) and what it is based on."""

    value: float
    basis: str
    low: float = float("nan")
    high: float = float("nan")

    def text(self) -> str:
        """``0.93 [0.88, 0.96]``, or ``≈ 0.93 (uncalibrated)`` without an interval."""
        if math.isnan(self.value):
            return "–"
        if math.isnan(self.low):
            return f"≈ {self.value:.2f} (uncalibrated)"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


@dataclass(frozen=True)
class BatchRecord:
    """One round's batch: the precision stated when it was proposed, and what review found."""

    round: int
    stated: float
    low: float
    high: float
    reviewed: int
    accepted: int

    @property
    def observed(self) -> float:
        """Share of the reviewed suggestions that were accepted (NaN before any review)."""
        return self.accepted / self.reviewed if self.reviewed else float("nan")


def stated_vs_observed(stated: dict[int, dict[str, float]], log: Sequence[Decision],
                       suggestions_of: dict[int, list[StoredSuggestion]]) -> list[BatchRecord]:
    """Per round (oldest first): the stated precision (``stated[round]`` = the round record's
    ``batch_precision``) beside the acceptance rate of its reviewed suggestions. Only rounds in
    which something was rejected tell a reviewer's judgement apart from accepting everything;
    the app says so beside the table."""
    out = []
    for rid in sorted(stated):
        conf, acc = reviewed_outcomes(log, {rid: suggestions_of.get(rid, [])})
        st = stated[rid]
        out.append(BatchRecord(rid, float(st.get("value", float("nan"))), float(st.get("low", float("nan"))),
                               float(st.get("high", float("nan"))), int(conf.size), int(acc.sum())))
    return out


def batch_precision(confidences: Sequence[float], past_conf: np.ndarray, past_accepted: np.ndarray,
                    *, min_reviews: int = MIN_CALIBRATION_REVIEWS) -> PrecisionEstimate:
    """Mean confidence of the batch, or — once ``min_reviews`` suggestions have been reviewed — the
    mean of the acceptance rates observed for similar confidences (10 bins)."""
    if len(confidences) == 0:
        return PrecisionEstimate(float("nan"), "empty batch")
    if len(past_conf) >= min_reviews:
        table = calibration_table(past_conf, past_accepted, bins=10)
        return PrecisionEstimate(
            estimated_precision(confidences, table), f"calibrated on {len(past_conf)} reviewed suggestions"
        )
    return PrecisionEstimate(
        estimated_precision(confidences), f"mean confidence ({len(past_conf)} reviews so far, calibration from {min_reviews})"
    )


# ---------------------------------------------------------------------------- disputed labels
@dataclass(frozen=True)
class Disputed:
    """A labeled image whose nearest labeled neighbours mostly carry another class."""

    image_id: int
    label: int
    voted: int
    share: float
    neighbours: tuple[int, ...]


def disputed_labels(
    ids: np.ndarray, embeddings: np.ndarray, labels: np.ndarray, *, k: int = 5, min_share: float = 0.6,
    normalize: bool = True,
) -> list[Disputed]:
    """Labeled rows (``labels >= 0``) whose ``k`` nearest other labeled rows give another class at
    least ``min_share`` of the votes; most contested first (share descending, then image id)."""
    if k < 1 or not 0 < min_share <= 1:
        raise ValueError(f"need k >= 1 and 0 < min_share <= 1, got k={k}, min_share={min_share}")
    lab = np.flatnonzero(np.asarray(labels) >= 0)
    if lab.size < 3:
        return []
    x = np.asarray(embeddings[lab], dtype=np.float32)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = np.asarray(labels)[lab].astype(np.int64)
    kk = min(k + 1, lab.size)
    _, nn = knn_search(x, x, kk)
    out: list[Disputed] = []
    for row in range(lab.size):
        others = [int(j) for j in nn[row] if j != row][: kk - 1]
        if not others:
            continue
        votes = Counter(int(y[j]) for j in others)
        voted, count = max(votes.items(), key=lambda kv: (kv[1], -kv[0]))
        share = count / len(others)
        if voted != y[row] and share >= min_share:
            out.append(Disputed(int(ids[lab[row]]), int(y[row]), voted, share,
                                tuple(int(ids[lab[j]]) for j in others)))
    out.sort(key=lambda d: (-d.share, d.image_id))
    return out

"""How common each class is, estimated without the labels the tool proposed itself.

A class that took over the accepted labels (every coat accepted as "shirt") looks common to
any model trained on those labels. :func:`estimate_shares` therefore votes only with the
labels a person chose (the seed and hand labels), in the backbone's own frozen feature space,
and :func:`balance_flags` compares each class's labeled count with that estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labeltool.eval.metrics import unit_rows
from labeltool.suggest.knn import knn_search

__all__ = ["ClassFlag", "balance_flags", "estimate_shares", "remaining_shares"]

# Pool rows voted on: a share's sampling error is at most 0.5 / sqrt(10,000) = 0.005 (one standard
# error), about ±0.01 at 95%; the vote's own error among few anchors is larger.
_SAMPLE = 10_000


def estimate_shares(features: Any, labels: np.ndarray, anchors: np.ndarray, num_classes: int, *, k: int = 5,
                    seed: int = 0, knn_backend: str = "auto") -> np.ndarray | None:
    """``[C]`` estimated share of each class in the whole pool.

    ``features [N, F]`` frozen backbone features (array, memmap or row view), ``labels [N]``
    (-1 = unlabeled), ``anchors [N]`` bool: the labels a person chose. Each of up to 10,000 pool
    rows (a fixed random sample) takes the majority class of its ``k`` nearest anchors (cosine);
    anchors keep their own label. ``None`` with fewer than two anchor classes.
    """
    labels = np.asarray(labels)
    anchor_rows = np.flatnonzero(np.asarray(anchors, dtype=bool) & (labels >= 0))
    if np.unique(labels[anchor_rows]).size < 2:
        return None
    n = labels.shape[0]
    rows = np.arange(n) if n <= _SAMPLE else np.sort(np.random.default_rng(seed).choice(n, _SAMPLE, replace=False))
    ref = unit_rows(np.asarray(features[anchor_rows], dtype=np.float32))
    ref_cls = labels[anchor_rows].astype(np.int64)
    kk = min(k, anchor_rows.size)
    votes = np.zeros((rows.size, num_classes))
    for s in range(0, rows.size, 4096):
        part = rows[s : s + 4096]
        _, nn = knn_search(unit_rows(np.asarray(features[part], dtype=np.float32)), ref, kk, backend=knn_backend)
        np.add.at(votes, (np.repeat(np.arange(part.size) + s, kk), ref_cls[nn].ravel()), 1.0)
    pred = votes.argmax(1)  # ties to the lower class id
    own = np.asarray(anchors, dtype=bool)[rows] & (labels[rows] >= 0)
    pred[own] = labels[rows][own]
    return np.bincount(pred, minlength=num_classes)[:num_classes] / rows.size


def remaining_shares(shares: np.ndarray, labeled_counts: np.ndarray, pool_size: int) -> np.ndarray:
    """``[C]`` estimated share of each class among the still unlabeled images: its estimated
    total ``shares[c] · pool_size`` minus what is labeled already (never below 0), normalised."""
    left = np.maximum(np.asarray(shares, dtype=np.float64) * pool_size - np.asarray(labeled_counts), 0.0)
    total = left.sum()
    return left / total if total > 0 else np.full(left.size, 1.0 / max(left.size, 1))


@dataclass(frozen=True)
class ClassFlag:
    """A class whose labeled count disagrees with its estimated size."""

    class_id: int
    labeled: int
    expected: float
    message: str


def balance_flags(labeled_counts: np.ndarray, shares: np.ndarray, pool_size: int, classes: Sequence[str], *,
                  over: float = 1.3, under: float = 0.5, min_expected: float = 10.0) -> list[ClassFlag]:
    """Classes that took over (more labels than ``over`` × their estimated size, plus 5) or starve
    (labeled at less than ``under`` × the pool's labeled fraction), biggest gap first.

    ``labeled_counts [C]`` labels per class, ``shares [C]`` from :func:`estimate_shares`,
    ``pool_size`` images in the pool. Classes expected to have fewer than ``min_expected``
    images are not judged (too few to tell)."""
    counts = np.asarray(labeled_counts, dtype=np.float64)
    expected = np.asarray(shares, dtype=np.float64) * pool_size
    frac = counts.sum() / max(pool_size, 1)
    flags: list[tuple[float, ClassFlag]] = []
    for c, name in enumerate(classes):
        exp, got = float(expected[c]), int(counts[c])
        if exp < min_expected:
            continue
        if got > over * exp + 5:
            msg = (f"'{name}' has {got} labels but only about {exp:.0f} such images are estimated in the pool: "
                   "some of its accepted labels are probably other classes; review its labels")
            flags.append((got / exp, ClassFlag(c, got, exp, msg)))
        elif frac >= 0.2 and got < under * frac * exp:
            msg = (f"'{name}' has {got} labels of about {exp:.0f} estimated, while {frac:.0%} of the pool is labeled: "
                   "its images are probably being labeled as other classes; label a few by hand")
            flags.append((frac * exp / max(got, 1), ClassFlag(c, got, exp, msg)))
    return [f for _, f in sorted(flags, key=lambda t: -t[0])]

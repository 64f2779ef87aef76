"""How common each class is, estimated without the labels the tool proposed itself.

A class that took over the accepted labels (every coat accepted as "shirt") looks common to
any model trained on those labels. :func:`estimate_shares` therefore votes only with the
labels a person chose (the seed and hand labels), in the backbone's own frozen feature space,
and :func:`balance_flags` compares each class's labeled count with that estimate. The votes'
neighbours (:class:`AnchorNeighbours`) carry over to the next estimate: with the same sampled
rows and no anchor gone or relabelled, only the new anchors are searched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labeltool.eval.metrics import unit_rows
from labeltool.suggest.knn import knn_search

__all__ = ["AnchorNeighbours", "ClassFlag", "anchor_neighbours", "balance_flags", "estimate_shares",
           "remaining_shares", "shares_from"]

# Pool rows voted on: a share's sampling error is at most 0.5 / sqrt(10,000) = 0.005 (one standard
# error), about ±0.01 at 95%; the vote's own error among few anchors is larger.
_SAMPLE = 10_000


@dataclass(frozen=True)
class AnchorNeighbours:
    """The ``k`` nearest anchors (cosine, backbone features) of each sampled pool row: ``rows [S]``
    and ``sample_ids [S]`` the rows and their image ids, ``dist [S, k']`` ascending squared
    distances of unit rows, ``anchor_ids [S, k']`` whose image ids; ``anchors`` maps every anchor
    searched to its class, ``pool_size`` and ``features_key`` say what was sampled from."""

    rows: np.ndarray
    sample_ids: np.ndarray
    dist: np.ndarray
    anchor_ids: np.ndarray
    anchors: dict[int, int] = field(repr=False)
    k: int
    pool_size: int
    features_key: str = ""


def _sample_rows(n: int, seed: int) -> np.ndarray:
    return np.arange(n) if n <= _SAMPLE else np.sort(np.random.default_rng(seed).choice(n, _SAMPLE, replace=False))


def _search(features: Any, rows: np.ndarray, ref_rows: np.ndarray, k: int,
            knn_backend: str) -> tuple[np.ndarray, np.ndarray]:
    """``(dist [S, k'], nn [S, k'])``: the nearest of ``ref_rows`` (indices into them) to each of ``rows``."""
    ref = unit_rows(np.asarray(features[ref_rows], dtype=np.float32))
    kk = min(k, ref_rows.size)
    dist, nn = np.empty((rows.size, kk), dtype=np.float32), np.empty((rows.size, kk), dtype=np.int64)
    for s in range(0, rows.size, 4096):
        part = rows[s : s + 4096]
        q = unit_rows(np.asarray(features[part], dtype=np.float32))
        dist[s : s + part.size], nn[s : s + part.size] = knn_search(q, ref, kk, backend=knn_backend)
    return dist, nn


def anchor_neighbours(features: Any, labels: np.ndarray, anchors: np.ndarray, ids: np.ndarray, *, k: int = 5,
                      seed: int = 0, knn_backend: str = "auto", previous: AnchorNeighbours | None = None,
                      features_key: str = "") -> AnchorNeighbours | None:
    """The ``k`` nearest anchors of up to 10,000 pool rows (a fixed random sample).

    ``features [N, F]`` frozen backbone features (array, memmap or row view), ``labels [N]``
    (-1 = unlabeled), ``anchors [N]`` bool: the labels a person chose, ``ids [N]`` image ids.
    ``previous`` (the last call's result) is extended with the new anchors alone when it sampled
    the same rows of the same features and every anchor it searched is still one, of the same
    class (the merged lists are the nearest of all anchors; equal distances may order
    differently). ``None`` with fewer than two anchor classes."""
    labels = np.asarray(labels)
    ids = np.asarray(ids)
    anchor_rows = np.flatnonzero(np.asarray(anchors, dtype=bool) & (labels >= 0))
    if np.unique(labels[anchor_rows]).size < 2:
        return None
    now = dict(zip(ids[anchor_rows].tolist(), labels[anchor_rows].astype(np.int64).tolist(), strict=True))
    rows = _sample_rows(labels.shape[0], seed)
    if (previous is not None and previous.k == k and previous.pool_size == labels.shape[0]
            and previous.features_key == features_key and np.array_equal(previous.sample_ids, ids[rows])
            and all(now.get(i) == c for i, c in previous.anchors.items())):
        new_rows = np.array([r for r in anchor_rows if int(ids[r]) not in previous.anchors], dtype=np.int64)
        if not new_rows.size:
            return previous
        dist, nn = _search(features, rows, new_rows, k, knn_backend)
        both_d = np.concatenate([previous.dist, dist], axis=1)
        both_i = np.concatenate([previous.anchor_ids, ids[new_rows][nn]], axis=1)
        order = np.argsort(both_d, axis=1, kind="stable")[:, : min(k, len(now))]
        pick = np.take_along_axis
        return AnchorNeighbours(rows, previous.sample_ids, pick(both_d, order, 1), pick(both_i, order, 1), now, k,
                                labels.shape[0], features_key)
    dist, nn = _search(features, rows, anchor_rows, k, knn_backend)
    return AnchorNeighbours(rows, ids[rows], dist, ids[anchor_rows][nn], now, k, labels.shape[0], features_key)


def shares_from(neighbours: AnchorNeighbours, labels: np.ndarray, anchors: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C]`` estimated share of each class in the whole pool: each sampled row takes the majority
    class of its nearest anchors (ties to the lower class id); anchors keep their own label."""
    rows = neighbours.rows
    cls = np.vectorize(neighbours.anchors.__getitem__, otypes=[np.int64])(neighbours.anchor_ids)
    votes = np.zeros((rows.size, num_classes))
    np.add.at(votes, (np.repeat(np.arange(rows.size), cls.shape[1]), cls.ravel()), 1.0)
    pred = votes.argmax(1)
    labels = np.asarray(labels)
    own = np.asarray(anchors, dtype=bool)[rows] & (labels[rows] >= 0)
    pred[own] = labels[rows][own]
    return np.bincount(pred, minlength=num_classes)[:num_classes] / rows.size


def estimate_shares(features: Any, labels: np.ndarray, anchors: np.ndarray, num_classes: int, *, k: int = 5,
                    seed: int = 0, knn_backend: str = "auto") -> np.ndarray | None:
    """``[C]`` estimated share of each class in the whole pool (:func:`anchor_neighbours`, then
    :func:`shares_from`): each of up to 10,000 pool rows (a fixed random sample) takes the
    majority class of its ``k`` nearest anchors (cosine); anchors keep their own label. ``None``
    with fewer than two anchor classes."""
    labels = np.asarray(labels)
    near = anchor_neighbours(features, labels, anchors, np.arange(labels.shape[0]), k=k, seed=seed,
                             knn_backend=knn_backend)
    return None if near is None else shares_from(near, labels, anchors, num_classes)


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

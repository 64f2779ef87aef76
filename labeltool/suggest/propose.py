"""Pseudo-label suggestions: confidence scores and batch selection, as pure functions over arrays.

:func:`propose` takes the current embedding of every image, the current labels (``-1`` =
unlabeled) and a :class:`SuggestConfig`, and returns ranked :class:`Suggestion` rows.

Confidence (always in ``[0, 1]``, higher = more confident):

- ``knn`` / ``"1nn"`` (Sahito et al.): predicted class = class of the nearest labeled image;
  confidence = ``1 / (1 + d²)`` of that 1-NN squared distance. It is monotone in ``d²``, so the
  ranking is exactly the paper's ascending 1-NN distance ranking.
- ``knn`` / ``"vote"``: the ``k`` nearest labeled images ``j`` vote with weights
  ``w_j = exp(-d_j² / τ)``, ``τ`` = median 1-NN squared distance over the queried pool (see
  :func:`vote_temperature`); confidence = the class's share of the total weight plus a uniform
  prior of one neighbour's weight (:func:`knn_class_scores`), so closer unanimous neighbours
  rank above distant ones instead of all scoring 1.
- ``walk``: ``P(class c | b)`` of the association walk, optionally times the round-trip
  consistency (:mod:`labeltool.suggest.walk`).
- ``softmax``: the classifier's probability of the class. Where it rounds to the same value for
  many images (1.0, for a confident scaled-cosine head), the one whose other classes hold less
  probability ranks first.
- ``knn+walk``: only images where both sources predict the same class; confidence = geometric
  mean of the two confidences.

Rejected ``(image_id, class_id)`` pairs are never proposed again: when an image's best class is
rejected, its best allowed class among those the source looked at is used (next by vote share,
by 1-NN distance among the ``k`` neighbours, by walk or softmax probability); if none is left, the
image gets no suggestion. Ties are broken by the lower class id, and between images by the lower
image id, so the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from labeltool.config import SuggestConfig
from labeltool.suggest.knn import knn_search
from labeltool.suggest.knn_scores import KNN_CONFIDENCES, knn_class_scores, vote_temperature
from labeltool.suggest.select import (
    Calibration,
    calibration_table,
    estimated_precision,
    select,
    selection_total,
)
from labeltool.suggest.walk import iter_walk_scores, load_rows, walk_class_probs, walk_roundtrip

__all__ = [
    "KNN_CONFIDENCES",
    "Calibration",
    "Suggestion",
    "calibration_table",
    "estimated_precision",
    "knn_class_scores",
    "propose",
    "select",
    "selection_total",
    "vote_temperature",
    "walk_class_probs",
    "walk_roundtrip",
]

_CHUNK = 4096  # unlabeled rows scored at a time


@dataclass(frozen=True)
class Suggestion:
    """One proposed label.

    ``distance`` is the squared distance to the nearest labeled image of ``class_id`` in the kNN
    geometry, for the sources that use kNN (``knn``, ``knn+walk``); ``None`` otherwise.
    ``evidence`` holds the ids of the nearest labeled images of ``class_id``, nearest first.
    """

    image_id: int
    class_id: int
    confidence: float
    source: str
    distance: float | None
    evidence: tuple[int, ...]
    rank: int


def _best(scores: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best allowed class per row (lowest id on ties) and its score; class -1 where none is allowed."""
    masked = np.where(allowed, scores, -np.inf)
    best = np.argmax(masked, axis=1)
    conf = masked[np.arange(masked.shape[0]), best]
    none = ~allowed.any(axis=1)
    best[none] = -1
    conf[none] = 0.0
    return best.astype(np.int64), np.clip(conf, 0.0, 1.0)


def _rest(probs: np.ndarray, best: np.ndarray) -> np.ndarray:
    """``[n]`` probability of every class but ``best`` per row, summed from those classes.

    ``1 - p_best`` would round to 0 wherever ``p_best`` rounds to 1.0 (a scaled-cosine head such
    as ArcFace's gives that for a third of a pool); the small probabilities themselves keep the
    ranking among those rows. Rows without a best class (``-1``) get 1.
    """
    other = probs.copy()
    rows = np.flatnonzero(best >= 0)
    other[rows, best[rows]] = 0.0
    out = other.sum(axis=1)
    out[best < 0] = 1.0
    return out


class _Rejections:
    """Rejected (unlabeled position, class) pairs, looked up per chunk of unlabeled positions."""

    def __init__(self, rejected: Iterable[tuple[int, int]], unl_ids: np.ndarray, num_classes: int) -> None:
        pairs = np.array([(int(i), int(c)) for i, c in rejected], dtype=np.int64).reshape(-1, 2)
        order = np.argsort(unl_ids, kind="stable")
        sorted_ids = unl_ids[order]
        at = np.searchsorted(sorted_ids, pairs[:, 0])
        at_c = np.minimum(at, max(len(sorted_ids) - 1, 0))
        ok = (at < len(sorted_ids)) & (pairs[:, 1] >= 0) & (pairs[:, 1] < num_classes)
        ok &= len(sorted_ids) > 0
        if len(sorted_ids):
            ok &= sorted_ids[at_c] == pairs[:, 0]
        pos = order[at_c[ok]] if len(sorted_ids) else np.zeros(0, np.int64)
        srt = np.argsort(pos, kind="stable")
        self.pos, self.cls = pos[srt], pairs[ok, 1][srt]

    def mask(self, start: int, stop: int, num_classes: int) -> np.ndarray:
        """``[stop - start, C]`` bool: True where the pair is rejected."""
        out = np.zeros((stop - start, num_classes), dtype=bool)
        lo, hi = np.searchsorted(self.pos, [start, stop])
        out[self.pos[lo:hi] - start, self.cls[lo:hi]] = True
        return out


def _validate(
    embeddings: np.ndarray,
    labels: np.ndarray,
    image_ids: np.ndarray,
    probs: np.ndarray | None,
    num_classes: int | None,
    source: str,
) -> tuple[np.ndarray, np.ndarray, int]:
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [N, D], got {getattr(embeddings, 'shape', None)}")
    n = embeddings.shape[0]
    if labels.shape != (n,) or image_ids.shape != (n,):
        raise ValueError(
            f"labels and image_ids must have shape ({n},), got {labels.shape} and {image_ids.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or not np.issubdtype(image_ids.dtype, np.integer):
        raise ValueError("labels and image_ids must be integer arrays")
    if np.unique(image_ids).size != n:
        raise ValueError("image_ids must be unique")
    c = num_classes
    if probs is not None:
        if probs.ndim != 2 or probs.shape[0] != n:
            raise ValueError(f"probs must be [N, C] with N = {n}, got {probs.shape}")
        if c is not None and probs.shape[1] != c:
            raise ValueError(f"probs has {probs.shape[1]} classes but num_classes = {c}")
        c = probs.shape[1]
    elif source == "softmax":
        raise ValueError("source 'softmax' needs probs [N, C]")
    if c is None:
        c = int(labels.max()) + 1 if n else 0
    if n and (labels.min() < -1 or labels.max() >= max(c, 0)):
        raise ValueError(f"labels must be -1 (unlabeled) or a class id in [0, {c})")
    return np.flatnonzero(labels >= 0), np.flatnonzero(labels == -1), int(c)


def propose(
    embeddings: np.ndarray,
    labels: np.ndarray,
    image_ids: np.ndarray,
    config: SuggestConfig,
    *,
    rejected: Iterable[tuple[int, int]] = (),
    probs: np.ndarray | None = None,
    num_classes: int | None = None,
    knn_backend: str = "auto",
) -> list[Suggestion]:
    """Ranked suggestions for the unlabeled images.

    Args:
        embeddings: ``[N, D]`` current embedding of every image (may be a memmap; read in chunks).
        labels: ``[N]`` int, ``-1`` = unlabeled, else the class id.
        image_ids: ``[N]`` int, unique.
        config: scoring and selection (module docstring for the confidence definitions).
        rejected: ``(image_id, class_id)`` pairs never to propose.
        probs: ``[N, C]`` class probabilities, required for ``source="softmax"``.
        num_classes: ``C``; default from ``probs`` or ``labels.max() + 1``.
        knn_backend: passed to :func:`labeltool.suggest.knn.knn_search`.

    Returns:
        Suggestions sorted by confidence descending (ties by image id), ``rank`` = position.
        Stratified selection splits the total over the classes that can be predicted (classes
        with a labeled image; all ``C`` for ``softmax``).
    """
    labels = np.asarray(labels)
    image_ids = np.asarray(image_ids)
    lab, unl, c = _validate(embeddings, labels, image_ids, probs, num_classes, config.source)
    src = config.source
    if unl.size == 0 or c == 0 or (src != "softmax" and lab.size == 0):
        return []
    lab = lab[np.argsort(image_ids[lab], kind="stable")]  # neighbour ties resolve by image id
    y_lab = labels[lab].astype(np.int64)
    a = load_rows(embeddings, lab, normalize=config.normalize)
    rej = _Rejections(rejected, image_ids[unl], c)
    n_u = unl.size

    nn_d = nn_i = None
    tau = 1.0
    if src in ("knn", "knn+walk"):
        kk = min(config.k, lab.size)
        nn_d = np.empty((n_u, kk), dtype=np.float32)
        nn_i = np.empty((n_u, kk), dtype=np.int64)
        for s in range(0, n_u, _CHUNK):
            q = load_rows(embeddings, unl[s : s + _CHUNK], normalize=config.normalize)
            nn_d[s : s + q.shape[0]], nn_i[s : s + q.shape[0]] = knn_search(q, a, kk, backend=knn_backend)
        tau = vote_temperature(nn_d[:, 0])

    def knn_part(s: int, e: int, rmask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert nn_d is not None and nn_i is not None
        nc = y_lab[nn_i[s:e]]
        sc, seen = knn_class_scores(nn_d[s:e], nc, c, mode=config.confidence, tau=tau)
        cls, conf = _best(sc, seen & ~rmask)
        dist = np.where(nc == cls[:, None], nn_d[s:e], np.inf).min(axis=1)
        return cls, conf, dist

    out_pos, out_cls, out_conf, out_dist, out_tie = [], [], [], [], []

    def emit(s: int, cls: np.ndarray, conf: np.ndarray, dist: np.ndarray | None,
             tie: np.ndarray | None = None) -> None:
        ok = cls >= 0
        out_pos.append(np.flatnonzero(ok) + s)
        out_cls.append(cls[ok])
        out_conf.append(conf[ok])
        out_dist.append(dist[ok] if dist is not None else np.full(int(ok.sum()), np.nan))
        out_tie.append(tie[ok] if tie is not None else np.zeros(int(ok.sum())))

    if src == "knn":
        for s in range(0, n_u, _CHUNK):
            e = min(n_u, s + _CHUNK)
            cls, conf, dist = knn_part(s, e, rej.mask(s, e, c))
            emit(s, cls, conf, dist)
    elif src == "softmax":
        assert probs is not None
        for s in range(0, n_u, _CHUNK):
            e = min(n_u, s + _CHUNK)
            p = np.asarray(probs[unl[s:e]], dtype=np.float64)
            if not np.isfinite(p).all() or p.min() < -1e-6 or p.max() > 1 + 1e-6:
                raise ValueError("probs must be finite probabilities in [0, 1]")
            cls, conf = _best(p, ~rej.mask(s, e, c))
            emit(s, cls, conf, None, tie=-_rest(p, cls))
    else:
        walk = iter_walk_scores(
            embeddings,
            a,
            y_lab,
            c,
            rows=unl,
            normalize=config.normalize,
            temperature=config.walk_temperature,
            roundtrip=config.walk_roundtrip,
            chunk_size=_CHUNK,
            labeled_chunk_size=None,
        )
        has_lab = np.bincount(y_lab, minlength=c) > 0
        for s, p, r in walk:
            e = s + p.shape[0]
            rmask = rej.mask(s, e, c)
            score = p * r if r is not None else p
            wcls, wconf = _best(score, has_lab[None, :] & ~rmask)
            if src == "walk":
                emit(s, wcls, wconf, None)
                continue
            kcls, kconf, kdist = knn_part(s, e, rmask)
            agree = (kcls == wcls) & (kcls >= 0)
            emit(s, np.where(agree, kcls, -1), np.sqrt(kconf * wconf), kdist)

    pos = np.concatenate(out_pos)
    cls = np.concatenate(out_cls)
    conf = np.concatenate(out_conf)
    dist = np.concatenate(out_dist)
    ids = image_ids[unl[pos]].astype(np.int64)
    predictable = c if src == "softmax" else int(np.unique(y_lab).size)
    chosen = select(ids, cls, conf, config, predictable, pool_size=n_u, tiebreak=np.concatenate(out_tie))
    evidence = _evidence(
        embeddings, unl[pos[chosen]], cls[chosen], a, y_lab, image_ids[lab], config, knn_backend
    )
    use_dist = src in ("knn", "knn+walk")
    return [
        Suggestion(
            image_id=int(ids[j]),
            class_id=int(cls[j]),
            confidence=float(conf[j]),
            source=src,
            distance=float(dist[j]) if use_dist else None,
            evidence=evidence[rank],
            rank=rank,
        )
        for rank, j in enumerate(chosen)
    ]


def _evidence(
    embeddings: np.ndarray,
    rows: np.ndarray,
    classes: np.ndarray,
    a: np.ndarray,
    y_lab: np.ndarray,
    lab_ids: np.ndarray,
    config: SuggestConfig,
    backend: str,
) -> list[tuple[int, ...]]:
    """Ids of the ``config.evidence`` nearest labeled images of each row's class, nearest first."""
    out: list[tuple[int, ...]] = [() for _ in range(rows.size)]
    if config.evidence == 0 or rows.size == 0:
        return out
    for cl in np.unique(classes):
        which = np.flatnonzero(classes == cl)
        members = np.flatnonzero(y_lab == cl)
        order = np.argsort(rows[which], kind="stable")  # read the rows in file order
        q = load_rows(embeddings, rows[which][order], normalize=config.normalize)
        _, nn = knn_search(q, a[members], config.evidence, backend=backend)
        for o, w in enumerate(which[order]):
            out[w] = tuple(int(i) for i in lab_ids[members[nn[o]]])
    return out

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

Each source is a scorer in :mod:`labeltool.suggest.sources`, registered by name
(:mod:`labeltool.suggest.registry`); :func:`propose` validates its inputs once, lets the scorer
rate every unlabeled image, then selects the batch and attaches evidence.

Rejected ``(image_id, class_id)`` pairs are never proposed again: when an image's best class is
rejected, its best allowed class among those the source looked at is used (next by vote share,
by 1-NN distance among the ``k`` neighbours, by walk or softmax probability); if none is left, the
image gets no suggestion. Ties are broken by the lower class id, and between images by the lower
image id, so the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from labeltool.suggest.knn import knn_search
from labeltool.suggest.knn_scores import KNN_CONFIDENCES, knn_class_scores, vote_temperature
from labeltool.suggest.registry import get_source
from labeltool.suggest.rejections import Rejections
from labeltool.suggest.select import select, selection_total
from labeltool.suggest.sources.base import ChunkScores, ScoringContext, SuggestionSource
from labeltool.suggest.walk import load_rows, walk_class_probs, walk_roundtrip

if TYPE_CHECKING:
    from labeltool.config import SuggestConfig

__all__ = [
    "KNN_CONFIDENCES",
    "Candidates",
    "candidates",
    "suggestions_from",
    "Suggestion",
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


def _validate(
    embeddings: np.ndarray,
    labels: np.ndarray,
    image_ids: np.ndarray,
    probs: np.ndarray | None,
    num_classes: int | None,
    source: SuggestionSource,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Shapes and label range; returns ``(labeled positions, unlabeled positions, C)``."""
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
    elif source.needs_probs:
        raise ValueError(f"source {source.name!r} needs probs [N, C]")
    if c is None:
        c = int(labels.max()) + 1 if n else 0
    if n and (labels.min() < -1 or labels.max() >= max(c, 0)):
        raise ValueError(f"labels must be -1 (unlabeled) or a class id in [0, {c})")
    return np.flatnonzero(labels >= 0), np.flatnonzero(labels == -1), int(c)


def _check_probs(probs: np.ndarray, rows: np.ndarray, chunk: int) -> None:
    """``probs [N, C]`` must hold finite probabilities in ``[0, 1]`` on ``rows [U]`` (read in chunks)."""
    for s in range(0, rows.size, chunk):
        p = np.asarray(probs[rows[s : s + chunk]], dtype=np.float64)
        if not np.isfinite(p).all() or p.min() < -1e-6 or p.max() > 1 + 1e-6:
            raise ValueError("probs must be finite probabilities in [0, 1]")


@dataclass(frozen=True)
class Candidates:
    """The best allowed class of every unlabeled image that has one, before selection.

    ``image_ids``, ``classes``, ``confidences``, ``distances`` (NaN where the source has none) and
    ``tiebreak`` are ``[M]``; ``rows`` ``[M]`` their embedding rows; ``pool_size`` = ``U``, the
    unlabeled images scored (``M <= U``: an image whose every class was rejected has none).
    """

    image_ids: np.ndarray
    classes: np.ndarray
    confidences: np.ndarray
    distances: np.ndarray
    tiebreak: np.ndarray
    rows: np.ndarray
    pool_size: int
    source: SuggestionSource
    context: ScoringContext
    labeled_ids: np.ndarray


def candidates(
    embeddings: np.ndarray,
    labels: np.ndarray,
    image_ids: np.ndarray,
    config: SuggestConfig,
    *,
    rejected: Iterable[tuple[int, int]] = (),
    probs: np.ndarray | None = None,
    num_classes: int | None = None,
    knn_backend: str = "auto",
) -> Candidates | None:
    """Score every unlabeled image (arguments as :func:`propose`); ``None`` when nothing can be
    proposed (no unlabeled image, no class, or no labeled image for a source that needs them)."""
    labels = np.asarray(labels)
    image_ids = np.asarray(image_ids)
    source = get_source(config.source)
    lab, unl, c = _validate(embeddings, labels, image_ids, probs, num_classes, source)
    if unl.size == 0 or c == 0 or (source.needs_labels and lab.size == 0):
        return None
    lab = lab[np.argsort(image_ids[lab], kind="stable")]  # neighbour ties resolve by image id
    ctx = ScoringContext(
        embeddings=embeddings,
        unlabeled=unl,
        labeled_rows=load_rows(embeddings, lab, normalize=config.normalize),
        labeled_classes=labels[lab].astype(np.int64),
        num_classes=c,
        rejections=Rejections(rejected, image_ids[unl], c),
        config=config,
        probs=probs,
        chunk_size=_CHUNK,
        knn_backend=knn_backend,
    )
    if probs is not None and source.needs_probs:
        _check_probs(probs, unl, _CHUNK)
    pos, cls, conf, dist, tie = _collect(source.score(ctx))
    return Candidates(image_ids[unl[pos]].astype(np.int64), cls, conf, dist, tie, unl[pos], int(unl.size), source,
                      ctx, image_ids[lab])


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
    shares: np.ndarray | None = None,
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
        shares: ``[C]`` estimated share of each class among the unlabeled images, for
            ``config.balance == "prevalence"`` (see :func:`~labeltool.suggest.select.select`).

    Returns:
        Suggestions sorted by confidence descending (ties by image id), ``rank`` = position.
        Stratified selection splits the total over the classes that can be predicted (classes
        with a labeled image; all ``C`` for ``softmax``).
    """
    cand = candidates(embeddings, labels, image_ids, config, rejected=rejected, probs=probs,
                      num_classes=num_classes, knn_backend=knn_backend)
    return [] if cand is None else suggestions_from(cand, shares)


def suggestions_from(cand: Candidates, shares: np.ndarray | None = None) -> list[Suggestion]:
    """Select the batch among ``cand`` (``shares [C]`` as in :func:`propose`) and attach evidence."""
    ctx, config, source = cand.context, cand.context.config, cand.source
    chosen = select(cand.image_ids, cand.classes, cand.confidences, config, source.predictable_classes(ctx),
                    pool_size=cand.pool_size, tiebreak=cand.tiebreak, shares=shares)
    evidence = _evidence(ctx, cand.rows[chosen], cand.classes[chosen], cand.labeled_ids)
    return [
        Suggestion(
            image_id=int(cand.image_ids[j]),
            class_id=int(cand.classes[j]),
            confidence=float(cand.confidences[j]),
            source=source.name,
            distance=float(cand.distances[j]) if source.has_distance else None,
            evidence=evidence[rank],
            rank=rank,
        )
        for rank, j in enumerate(chosen)
    ]


def _collect(chunks: Iterator[ChunkScores]) -> tuple[np.ndarray, ...]:
    """Candidates of every chunk, concatenated: ``(positions, classes, confidences, distances,
    tiebreak)``, each ``[M]``, only where a chunk has a class (``>= 0``). Missing distances are
    NaN, a missing tiebreak 0."""
    out_pos, out_cls, out_conf, out_dist, out_tie = [], [], [], [], []
    for s, cls, conf, dist, tie in chunks:
        ok = cls >= 0
        out_pos.append(np.flatnonzero(ok) + s)
        out_cls.append(cls[ok])
        out_conf.append(conf[ok])
        out_dist.append(dist[ok] if dist is not None else np.full(int(ok.sum()), np.nan))
        out_tie.append(tie[ok] if tie is not None else np.zeros(int(ok.sum())))
    return tuple(np.concatenate(parts) for parts in (out_pos, out_cls, out_conf, out_dist, out_tie))


def _evidence(
    ctx: ScoringContext, rows: np.ndarray, classes: np.ndarray, lab_ids: np.ndarray
) -> list[tuple[int, ...]]:
    """Ids of the ``config.evidence`` nearest labeled images of each row's class, nearest first.

    ``rows [M]`` embedding rows, ``classes [M]`` their suggested classes, ``lab_ids [L]`` the image
    id of each labeled row of ``ctx``.
    """
    config = ctx.config
    out: list[tuple[int, ...]] = [() for _ in range(rows.size)]
    if config.evidence == 0 or rows.size == 0:
        return out
    for cl in np.unique(classes):
        which = np.flatnonzero(classes == cl)
        members = np.flatnonzero(ctx.labeled_classes == cl)
        order = np.argsort(rows[which], kind="stable")  # read the rows in file order
        q = load_rows(ctx.embeddings, rows[which][order], normalize=config.normalize)
        _, nn = knn_search(q, ctx.labeled_rows[members], config.evidence, backend=ctx.knn_backend)
        for o, w in enumerate(which[order]):
            out[w] = tuple(int(i) for i in lab_ids[members[nn[o]]])
    return out

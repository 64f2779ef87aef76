"""``knn``: the class of the nearest labeled images, scored by 1-NN distance or weighted vote."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from labeltool.suggest.ann import build_index
from labeltool.suggest.knn_scores import neighbor_class_scores, vote_temperature
from labeltool.suggest.registry import register_source
from labeltool.suggest.sources.base import ChunkScores, ScoringContext, SuggestionSource, best_allowed


@dataclass(frozen=True)
class Neighbours:
    """The ``k = min(config.k, L)`` nearest labeled rows of every unlabeled position.

    ``distances [U, k]`` float32 squared distances ascending, ``indices [U, k]`` int64 into the
    labeled rows, ``tau`` the vote temperature (median 1-NN squared distance of the pool).
    """

    distances: np.ndarray
    indices: np.ndarray
    tau: float


def nearest_labeled(ctx: ScoringContext) -> Neighbours:
    """kNN of every unlabeled position among the labeled rows (exact, or approximate from
    ``config.approximate_from`` labeled rows on: :func:`~labeltool.suggest.ann.build_index`)."""
    kk = min(ctx.config.k, ctx.labeled_classes.size)
    n_u = ctx.unlabeled.size
    nn_d = np.empty((n_u, kk), dtype=np.float32)
    nn_i = np.empty((n_u, kk), dtype=np.int64)
    index = build_index(ctx.labeled_rows, backend=ctx.knn_backend, approximate_from=ctx.config.approximate_from,
                        queries=n_u)  # built once, searched chunk by chunk
    for s, e in ctx.chunks():
        q = ctx.unlabeled_rows(s, e)
        nn_d[s : s + q.shape[0]], nn_i[s : s + q.shape[0]] = index.search(q, kk)
    return Neighbours(nn_d, nn_i, vote_temperature(nn_d[:, 0]))


def knn_choice(
    ctx: ScoringContext, nb: Neighbours, start: int, stop: int, rejected: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best allowed class among the neighbours of positions ``start:stop``.

    ``rejected [r, C]`` bool. Returns ``(classes [r], confidences [r], distances [r])``: the class
    (``-1`` if none is left), its kNN confidence and the squared distance to its nearest neighbour.
    """
    dist = nb.distances[start:stop]
    nc = ctx.labeled_classes[nb.indices[start:stop]]
    scores, seen = neighbor_class_scores(
        dist.astype(np.float64), nc, ctx.num_classes, mode=ctx.config.confidence, tau=nb.tau
    )
    cls, conf = best_allowed(scores, seen & ~rejected)
    nearest = np.where(nc == cls[:, None], dist, np.inf).min(axis=1)
    return cls, conf, nearest


@register_source("knn")
class KnnSource(SuggestionSource):
    """Nearest labeled images: ``confidence`` "1nn" (``1 / (1 + d²)``) or "vote" (weighted share)."""

    help = "nearest labeled images (safe default)"
    uses_knn_confidence = True
    has_distance = True

    def score(self, ctx: ScoringContext) -> Iterator[ChunkScores]:
        nb = nearest_labeled(ctx)
        for s, e in ctx.chunks():
            cls, conf, dist = knn_choice(ctx, nb, s, e, ctx.rejected(s, e))
            yield ChunkScores(s, cls, conf, dist)

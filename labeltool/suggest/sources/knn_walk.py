"""``knn+walk``: only images where kNN and the walk predict the same class; geometric-mean confidence."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from labeltool.suggest.registry import register_source
from labeltool.suggest.sources.base import ChunkScores, ScoringContext, SuggestionSource
from labeltool.suggest.sources.knn import knn_choice, nearest_labeled
from labeltool.suggest.sources.walk import walk_choices


@register_source("knn+walk")
class KnnWalkSource(SuggestionSource):
    """Agreement of ``knn`` and ``walk``: confidence ``sqrt(knn confidence · walk confidence)``."""

    help = "kNN and the association walk must agree on the class"
    uses_knn_confidence = True
    has_distance = True

    def score(self, ctx: ScoringContext) -> Iterator[ChunkScores]:
        nb = nearest_labeled(ctx)
        for s, e, rejected, wcls, wconf in walk_choices(ctx):
            kcls, kconf, kdist = knn_choice(ctx, nb, s, e, rejected)
            agree = (kcls == wcls) & (kcls >= 0)
            yield ChunkScores(s, np.where(agree, kcls, -1), np.sqrt(kconf * wconf), kdist)

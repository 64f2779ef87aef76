"""``softmax``: the classifier's probability of the class, ties ranked by what the others hold."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from labeltool.suggest.registry import register_source
from labeltool.suggest.sources.base import ChunkScores, ScoringContext, SuggestionSource, best_allowed


def rest_probability(probs: np.ndarray, best: np.ndarray) -> np.ndarray:
    """``[r]`` probability of every class but ``best [r]`` per row of ``probs [r, C]``, summed from those classes.

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


@register_source("softmax")
class SoftmaxSource(SuggestionSource):
    """Classifier probabilities ``probs [N, C]``; among equal probabilities the image whose other
    classes hold less probability ranks first. Predicts every class, labeled or not."""

    help = "the classifier head's probability (best for cross_entropy, w_softmax, center once labels are many)"
    needs_probs = True
    needs_labels = False

    def score(self, ctx: ScoringContext) -> Iterator[ChunkScores]:
        assert ctx.probs is not None
        for s, e in ctx.chunks():
            p = np.asarray(ctx.probs[ctx.unlabeled[s:e]], dtype=np.float64)
            cls, conf = best_allowed(p, ~ctx.rejected(s, e))
            yield ChunkScores(s, cls, conf, tiebreak=-rest_probability(p, cls))

    def predictable_classes(self, ctx: ScoringContext) -> int:
        return ctx.num_classes

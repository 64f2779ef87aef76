"""``walk``: ``P(class | image)`` of the association walk, optionally times its round-trip consistency."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from labeltool.suggest.registry import register_source
from labeltool.suggest.sources.base import ChunkScores, ScoringContext, SuggestionSource, best_allowed
from labeltool.suggest.walk import walk_chunk_scores


def walk_choices(ctx: ScoringContext) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per chunk ``(start, stop, rejected [r, C], classes [r], confidences [r])``: the best allowed
    class with a labeled image by walk score (``-1`` if none is left) and that score."""
    cfg = ctx.config
    has_lab = np.bincount(ctx.labeled_classes, minlength=ctx.num_classes) > 0
    walk = walk_chunk_scores(
        ctx.embeddings,
        ctx.labeled_rows,
        ctx.labeled_classes,
        ctx.num_classes,
        rows=ctx.unlabeled,
        normalize=cfg.normalize,
        temperature=cfg.walk_temperature,
        roundtrip=cfg.walk_roundtrip,
        chunk_size=ctx.chunk_size,
        labeled_chunk_size=None,
    )
    for s, p, r in walk:
        e = s + p.shape[0]
        rejected = ctx.rejected(s, e)
        score = p * r if r is not None else p
        cls, conf = best_allowed(score, has_lab[None, :] & ~rejected)
        yield s, e, rejected, cls, conf


@register_source("walk")
class WalkSource(SuggestionSource):
    """Association walk from the image to the labeled set (``walk_roundtrip``: times R(c | b))."""

    help = "association walk to the labeled images (best for the association loss)"

    def score(self, ctx: ScoringContext) -> Iterator[ChunkScores]:
        for s, _, _, cls, conf in walk_choices(ctx):
            yield ChunkScores(s, cls, conf)

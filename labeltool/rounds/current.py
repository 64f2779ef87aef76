"""The newest round as the session holds it: its checkpoint and its embedding of the pool."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from labeltool.data.store import StoredSuggestion
from labeltool.suggest.propose import Suggestion
from labeltool.train.checkpoints import Checkpoint

__all__ = ["RoundEmbedding", "pending_suggestions"]


@dataclass
class RoundEmbedding:
    """The pool embedded by one round's head: ids ``[N]``, embeddings ``[N, D]``, probs ``[N, C]``."""

    round: int
    checkpoint: Checkpoint
    ids: np.ndarray
    embeddings: np.ndarray
    probs: np.ndarray | None

    def labels(self, labels: Mapping[int, int]) -> np.ndarray:
        """Label array ``[N]`` int64 (-1 = unlabeled) of the embedded rows."""
        return np.fromiter((labels.get(int(i), -1) for i in self.ids), dtype=np.int64, count=len(self.ids))


def pending_suggestions(stored: Iterable[StoredSuggestion], labels: Mapping[int, int],
                        rejected: set[tuple[int, int]] | frozenset[tuple[int, int]]) -> list[Suggestion]:
    """Stored suggestions whose image is still unlabeled and whose pair is not rejected, ranked anew."""
    out: list[Suggestion] = []
    for s in stored:
        if s.image_id in labels or (s.image_id, s.class_id) in rejected:
            continue
        out.append(Suggestion(s.image_id, s.class_id, s.confidence, s.source, s.distance, s.evidence, len(out)))
    return out

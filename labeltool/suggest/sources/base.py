"""The contract every suggestion source implements: a scorer over already-validated arrays.

:func:`labeltool.suggest.propose.propose` validates its inputs once, builds a
:class:`ScoringContext` and asks the configured source for :class:`ChunkScores`, one per chunk of
unlabeled positions; it then selects the batch and attaches evidence. A scorer therefore never
re-checks shapes, label ranges or settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import numpy as np

from labeltool.suggest.rejections import Rejections
from labeltool.suggest.walk import load_rows

if TYPE_CHECKING:
    from labeltool.config import SuggestConfig


@dataclass(frozen=True)
class ScoringContext:
    """Validated inputs of one :func:`~labeltool.suggest.propose.propose` call.

    - ``embeddings``: ``[N, D]`` every image (may be a memmap; read ``chunk_size`` rows at a time).
    - ``unlabeled``: ``[U]`` int64 row positions of the unlabeled images, ``U >= 1``.
    - ``labeled_rows``: ``[L, D]`` float32 labeled embeddings (L2-normalised with
      ``config.normalize``), ordered by image id so that neighbour ties resolve by image id.
    - ``labeled_classes``: ``[L]`` int64 class of each labeled row, in ``[0, num_classes)``.
    - ``probs``: ``[N, C]`` class probabilities (finite, in ``[0, 1]`` on the unlabeled rows)
      when the source needs them, else possibly ``None``.
    """

    embeddings: np.ndarray
    unlabeled: np.ndarray
    labeled_rows: np.ndarray
    labeled_classes: np.ndarray
    num_classes: int
    rejections: Rejections
    config: SuggestConfig
    probs: np.ndarray | None
    chunk_size: int
    knn_backend: str

    def chunks(self) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each chunk of unlabeled positions."""
        n_u = self.unlabeled.size
        for start in range(0, n_u, self.chunk_size):
            yield start, min(n_u, start + self.chunk_size)

    def rejected(self, start: int, stop: int) -> np.ndarray:
        """``[stop - start, C]`` bool: True where (unlabeled position, class) was rejected."""
        return self.rejections.mask(start, stop)

    def unlabeled_rows(self, start: int, stop: int) -> np.ndarray:
        """``[stop - start, D]`` float32 embeddings of unlabeled positions ``start:stop``."""
        return load_rows(self.embeddings, self.unlabeled[start:stop], normalize=self.config.normalize)


class ChunkScores(NamedTuple):
    """Best allowed class per unlabeled position of one chunk, starting at position ``start``.

    ``classes [r]`` int64 (``-1`` = no suggestion for that image), ``confidences [r]`` in
    ``[0, 1]``, ``distances [r]`` squared kNN distance to the nearest labeled image of the class
    (``None`` for sources without one), ``tiebreak [r]`` second ranking key, higher first
    (``None`` = none).
    """

    start: int
    classes: np.ndarray
    confidences: np.ndarray
    distances: np.ndarray | None = None
    tiebreak: np.ndarray | None = None


class SuggestionSource:
    """A scorer registered by name; subclasses set the class attributes and :meth:`score`.

    - ``help``: one line for the app and CLI.
    - ``needs_probs``: scores from a classifier's probabilities ``[N, C]``.
    - ``needs_labels``: proposes nothing while no image is labeled.
    - ``uses_knn_confidence``: the ``confidence`` setting ("vote"/"1nn") changes its scores.
    - ``has_distance``: its suggestions carry a kNN distance.
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    needs_probs: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True
    uses_knn_confidence: ClassVar[bool] = False
    has_distance: ClassVar[bool] = False

    def score(self, ctx: ScoringContext) -> Iterator[ChunkScores]:
        """Per-chunk best allowed class (never a rejected pair) and its confidence."""
        raise NotImplementedError

    def predictable_classes(self, ctx: ScoringContext) -> int:
        """How many classes the source can predict (the stratified split): those with a labeled image."""
        return int(np.unique(ctx.labeled_classes).size)


def best_allowed(scores: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best allowed class per row of ``scores [r, C]`` (lowest id on ties) and its score clipped to [0, 1].

    ``allowed [r, C]`` bool; rows with no allowed class get class ``-1`` and score 0.
    """
    masked = np.where(allowed, scores, -np.inf)
    best = np.argmax(masked, axis=1)
    conf = masked[np.arange(masked.shape[0]), best]
    none = ~allowed.any(axis=1)
    best[none] = -1
    conf[none] = 0.0
    return best.astype(np.int64), np.clip(conf, 0.0, 1.0)

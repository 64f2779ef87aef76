"""Batch index samplers for the trainers: class-balanced P x K labeled batches and a cycling
draw from the unlabeled pool. Both are seeded and cost O(batch) per step, whatever the pool size."""

from __future__ import annotations

import numpy as np


class CyclingSampler:
    """Draws ``size`` distinct indices of ``items`` per call, walking through a shuffled order
    and reshuffling when it runs out, so every item is drawn once before any is drawn twice.

    Replaces ``rng.choice(items, size, replace=False)``, which shuffles the whole array on
    every call (O(len(items)) per step; seconds per round on a 1M-image pool).
    """

    def __init__(self, items: np.ndarray, size: int, rng: np.random.Generator) -> None:
        self.items = np.asarray(items)
        self.size = min(int(size), len(self.items))
        self.rng = rng
        self._order = self.rng.permutation(len(self.items))
        self._pos = 0

    def __len__(self) -> int:
        return len(self.items)

    def __call__(self) -> np.ndarray:
        """Indices ``[size]`` taken from ``items``, distinct within the call."""
        n = len(self.items)
        if self.size == 0:
            return self.items[:0]
        if self._pos + self.size <= n:
            pick = self._order[self._pos : self._pos + self.size]
            self._pos += self.size
            return self.items[pick]
        head = self._order[self._pos :]
        self._order = self.rng.permutation(n)
        if len(head):  # the next pass starts with items not already in this batch
            fresh = np.ones(n, dtype=bool)
            fresh[head] = False
            self._order = np.concatenate([self._order[fresh[self._order]], self._order[~fresh[self._order]]])
        need = self.size - len(head)
        self._pos = need
        return self.items[np.concatenate([head, self._order[:need]])]


class BalancedSampler:
    """Draws P classes x K indices per call from ``labels`` (``-1`` rows ignored).

    Classes are picked at random; within a class the images are taken in a per-class cycling
    order, so a class's images are all used before any repeats. A class with fewer than K
    images contributes each of them once (the batch is then smaller than P x K rather than
    holding duplicates, which would form zero-distance positive pairs).
    """

    def __init__(self, labels: np.ndarray, classes_per_batch: int, samples_per_class: int, rng: np.random.Generator):
        labels = np.asarray(labels)
        by_class = [np.flatnonzero(labels == c) for c in np.unique(labels[labels >= 0])]
        self.by_class = [ix for ix in by_class if len(ix)]
        self.p = min(classes_per_batch, len(self.by_class))
        self.k = samples_per_class
        self.rng = rng
        self._cycles = [CyclingSampler(ix, samples_per_class, rng) for ix in self.by_class]

    @property
    def batch_size(self) -> int:
        """Largest batch one call returns (P x K)."""
        return self.p * self.k

    def __call__(self) -> np.ndarray:
        """Indices ``[<= P*K]`` into ``labels``, grouped by class."""
        chosen = self.rng.choice(len(self.by_class), size=self.p, replace=False)
        return np.concatenate([self._cycles[c]() for c in chosen])

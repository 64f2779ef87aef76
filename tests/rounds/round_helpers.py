"""Pools and seeds shared by the tests of labeltool.rounds."""

from __future__ import annotations

import numpy as np

from labeltool.config import TrainConfig

CFG = TrainConfig(max_steps=100, min_steps=100, seed=0, device="cpu", embedding_dim=8, hidden_dim=32)


def pool(n_per: int = 60, classes: int = 4, overlap: float = 1.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs ``[n_per·C, 16]``; ``overlap`` sets how often neighbours disagree."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per)
    x = rng.normal(size=(y.size, 16)) * overlap + 3.0 * np.eye(classes, 16)[y]
    return x.astype(np.float32), y


def seeded(y: np.ndarray, per: int) -> np.ndarray:
    labels = np.full(y.size, -1, dtype=np.int64)
    for c in np.unique(y):
        take = np.flatnonzero(y == c)[:per]
        labels[take] = c
    return labels

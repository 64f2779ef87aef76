"""Shared references for the suggestion tests: dense float64 re-computations and toy problems."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings

SUGGEST_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def dense_walk(
    u: np.ndarray, a: np.ndarray, y: np.ndarray, c: int, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """Dense float64 reference: P(c|b) and the class-balanced round-trip start probabilities R(c|b)."""
    m = a.astype(np.float64) @ u.astype(np.float64).T / t  # [L, U]
    onehot = np.eye(c)[y]
    p = softmax(m.T, axis=1) @ onehot  # P^{ba} summed per class
    arrive = softmax(m, axis=1).T @ onehot  # Σ_{a in c} P^{ab}(a -> b)
    counts = onehot.sum(0)
    bal = np.where(counts > 0, arrive / np.maximum(counts, 1), 0.0)
    with np.errstate(invalid="ignore"):  # the naive reference underflows for huge logits
        return p, bal / bal.sum(1, keepdims=True)


def sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float64)[:, None] - y.astype(np.float64)[None]) ** 2).sum(-1)


def blobs(n: int = 60, d: int = 5, c: int = 3, frac: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d)) * 4
    truth = rng.integers(0, c, n)
    truth[:c] = np.arange(c)  # every class present
    emb = (centers[truth] + rng.normal(size=(n, d))).astype(np.float32)
    labels = np.where(rng.random(n) < frac, truth, -1)
    labels[:c] = np.arange(c)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    return emb, labels.astype(np.int64), ids, truth

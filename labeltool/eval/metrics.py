"""Round metrics: kNN accuracy in the learned embedding, label accuracy against ground truth,
and the compactness metrics of the angular-learning paper (see ``metrics_compactness``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labeltool.eval.compactness import compactness_metrics
from labeltool.losses import EmbeddingLoss
from labeltool.suggest.knn import knn_search


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` ``[N, D]`` scaled to unit L2 norm (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _majority(votes: np.ndarray) -> int:
    """The most frequent label among one query's neighbour labels ``[k]`` (nearest first);
    a tie goes to the label seen nearest."""
    order = votes.tolist()
    return max(set(order), key=lambda c: (order.count(c), -order.index(c)))


def loo_knn_accuracy(embeddings: np.ndarray, labels: np.ndarray, *, normalize: bool = True) -> float | None:
    """Leave-one-out 1-NN accuracy over the labeled rows (``labels >= 0``) of ``embeddings`` ``[N, D]``.

    Measured on the training labels, so it says how separable the labeled set has become,
    not how well unlabeled images are predicted. None with fewer than two labeled rows.
    """
    mask = labels >= 0
    if mask.sum() < 2:
        return None
    x = np.asarray(embeddings[mask], dtype=np.float32)
    x = unit_rows(x) if normalize else x
    _, idx = knn_search(x, x, 2)
    y = labels[mask]
    # the nearest neighbour of a point is normally itself; take the other one (duplicates may swap)
    self_first = idx[:, 0] == np.arange(len(x))
    nn = np.where(self_first, idx[:, 1], idx[:, 0])
    return float((y[nn] == y).mean())


def knn_accuracy(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, *, k: int = 1,
    normalize: bool = True,
) -> float:
    """Accuracy of a k-NN majority vote (ties → nearest) from ``train`` ``[N, D]`` to ``test`` ``[M, D]``."""
    if len(test) == 0:
        raise ValueError("knn_accuracy needs at least one test row")
    a = unit_rows(np.asarray(train, np.float32)) if normalize else np.asarray(train, np.float32)
    b = unit_rows(np.asarray(test, np.float32)) if normalize else np.asarray(test, np.float32)
    _, idx = knn_search(b, a, k)
    votes = train_labels[idx]
    if k == 1:
        pred = votes[:, 0]
    else:
        pred = np.array([_majority(v) for v in votes])
    return float((pred == test_labels).mean())


def label_accuracy(labels: Mapping[int, int], truth: Mapping[int, int], among: Sequence[int] | None = None) -> dict[str, Any]:
    """How many current labels agree with ground truth, over the images that have both."""
    ids = [i for i in (among if among is not None else labels) if i in labels and i in truth]
    correct = sum(1 for i in ids if labels[i] == truth[i])
    return {"checked": len(ids), "correct": correct, "accuracy": correct / len(ids) if ids else None}


def round_metrics(embeddings: np.ndarray, labels: np.ndarray, loss: EmbeddingLoss, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics stored with a round: labeled/unlabeled counts, LOO 1-NN accuracy, compactness."""
    mask = labels >= 0
    out: dict[str, Any] = {
        "n_labeled": int(mask.sum()), "n_unlabeled": int((~mask).sum()), "num_classes": len(classes),
        "embedding_dim": int(embeddings.shape[1]),
        "loo_1nn_accuracy": loo_knn_accuracy(embeddings, labels, normalize=loss.normalize_embeddings),
    }
    weights = loss.class_weights()
    try:
        comp = compactness_metrics(embeddings[mask], labels[mask], weights if weights is not None else None)
        out.update({k: float(v) for k, v in comp.items()})
    except ValueError as e:  # e.g. a single class present: nothing to compare
        out["compactness_error"] = str(e)
    return out

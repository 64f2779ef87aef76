"""Softmax cross-entropy on a linear classifier over the embedding (Sahito et al. baseline)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam


@register_loss("cross_entropy")
class CrossEntropyLoss(EmbeddingLoss):
    """Linear classifier ``W x + b`` on the embedding, trained with softmax cross-entropy.

    Suggestion confidence for this loss is the maximum softmax probability.
    """

    has_classifier = True
    hyperparams = (
        HyperParam("label_smoothing", 0.0, "float", 0.0, 0.5, help="label smoothing of the targets"),
    )

    def __init__(self, num_classes: int, embedding_dim: int, **hyper: Any) -> None:
        super().__init__(num_classes, embedding_dim, **hyper)
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean CE over the ``[B]`` labeled rows of ``embeddings`` ``[B, D]``."""
        return F.cross_entropy(
            self.logits(embeddings), labels, label_smoothing=self.hparams["label_smoothing"]
        )

    def logits(self, embeddings: Tensor) -> Tensor:
        """Class scores ``[B, C]``."""
        return self.classifier(embeddings.float())

    def class_weights(self) -> Tensor:
        """Classifier weight vectors ``[C, D]`` (for the compactness metrics)."""
        return self.classifier.weight.detach()

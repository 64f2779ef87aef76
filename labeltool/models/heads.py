"""Projection head trained on cached backbone features, and the prototype classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from labeltool.losses.base import EmbeddingLoss


class ProjectionHead(nn.Module):
    """MLP ``[B, F] -> [B, D]`` on L2-normalised backbone features.

    ``Linear(F, H) → BatchNorm → ReLU → Dropout → Linear(H, D)``; the output is left
    unnormalised, each loss normalises as its formula requires.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.hidden_dim, self.dropout = in_dim, out_dim, hidden_dim, dropout
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, features: Tensor) -> Tensor:
        """Embeddings ``[B, D]`` of backbone features ``[B, F]``."""
        return self.net(F.normalize(features.float(), dim=1))

    def config(self) -> dict[str, float | int]:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "hidden_dim": self.hidden_dim, "dropout": self.dropout}


class PrototypeClassifier(nn.Module):
    """Nearest-class-mean classifier: logits ``[B, C]`` = ``scale`` · cos(embedding, prototype_c).

    Used for export and prediction when the loss has no classifier of its own (triplet,
    contrastive, ...). Prototypes are the normalised means of the normalised labeled embeddings.
    """

    prototypes: Tensor  # [C, D] unit rows, a registered buffer

    def __init__(self, prototypes: Tensor, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("prototypes", F.normalize(prototypes.float(), dim=1))
        self.scale = float(scale)

    @staticmethod
    def from_embeddings(embeddings: Tensor, labels: Tensor, num_classes: int, scale: float = 16.0) -> PrototypeClassifier:
        """Prototypes from labeled embeddings ``[N, D]`` and labels ``[N]`` (classes with no
        example get a zero prototype, so they are never predicted with confidence)."""
        emb = F.normalize(embeddings.float(), dim=1)
        protos = torch.zeros(num_classes, emb.shape[1])
        protos.index_add_(0, labels.long(), emb)
        return PrototypeClassifier(protos, scale)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.scale * F.normalize(embeddings.float(), dim=1) @ self.prototypes.T


class LossLogits(nn.Module):
    """Wraps a loss with a classifier so it can be called as ``embeddings [B, D] -> logits [B, C]``."""

    def __init__(self, loss: EmbeddingLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.loss.logits(embeddings)


class LabelerModel(nn.Module):
    """Backbone + head + classifier: preprocessed images ``[B, 3, S, S]`` → probabilities ``[B, C]``."""

    def __init__(self, backbone: nn.Module, head: ProjectionHead, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head, self.classifier = backbone, head, classifier

    def forward(self, images: Tensor) -> Tensor:
        return torch.softmax(self.classifier(self.head(self.backbone(images))).float(), dim=1)

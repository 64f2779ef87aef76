"""Center loss (Wen et al. 2016): softmax CE plus a pull of each feature to its class center."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam


@register_loss("center")
class CenterLoss(EmbeddingLoss):
    """Softmax CE + ``λ · ½ · mean_i ‖x_i - c_{y_i}‖²`` on raw embeddings ``[B, D]``, labels ``[B]``.

    The classifier is a linear layer ``W x + b`` (``W`` ``[C, D]``). The centers ``c`` ``[C, D]``
    are a buffer (saved with the module, not seen by the optimiser) updated as in the paper: after
    each training forward, ``c_j ← c_j - α · Σ_{i: y_i = j} (c_j - x_i) / (1 + n_j)`` under
    ``no_grad``, with ``α = 0.5``; the gradient of the center term reaches only the embeddings.
    Defaults ``λ = 0.003``, ``α = 0.5``. Distances are Euclidean on the raw embedding.
    """

    has_classifier = True
    normalize_embeddings = False
    centers: Tensor
    hyperparams = (
        HyperParam("lam", 0.003, "float", 0.0, 1.0, help="weight λ of the center term"),
        HyperParam("center_alpha", 0.5, "float", 0.0, 1.0, help="center update rate α"),
    )

    def __init__(self, num_classes: int, embedding_dim: int, **hyper: Any) -> None:
        super().__init__(num_classes, embedding_dim, **hyper)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.register_buffer("centers", torch.zeros(num_classes, embedding_dim))

    def center_term(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """``½ · mean_i ‖x_i - c_{y_i}‖²`` (without λ) for ``[B, D]`` and ``[B]``."""
        diff = embeddings.float() - self.centers[labels]
        return 0.5 * diff.pow(2).sum(dim=1).mean()

    @torch.no_grad()
    def update_centers(self, embeddings: Tensor, labels: Tensor) -> None:
        """One center step ``c_j -= α Σ_{y_i=j} (c_j - x_i) / (1 + n_j)`` from ``[B, D]``, ``[B]``."""
        x = embeddings.detach().float()
        counts = torch.bincount(labels, minlength=self.num_classes).to(x.dtype)  # [C]
        sums = torch.zeros_like(self.centers).index_add_(0, labels, x)  # [C, D]
        delta = (counts[:, None] * self.centers - sums) / (1.0 + counts[:, None])
        self.centers.sub_(self.hparams["center_alpha"] * delta)

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scalar loss; updates the centers when the module trains with gradients enabled."""
        ce = F.cross_entropy(self.logits(embeddings), labels)
        loss = ce + self.hparams["lam"] * self.center_term(embeddings, labels)
        if self.training and torch.is_grad_enabled():
            self.update_centers(embeddings, labels)
        return loss

    def logits(self, embeddings: Tensor) -> Tensor:
        """Class scores ``W x + b`` ``[B, C]``."""
        return self.classifier(embeddings.float())

    def class_weights(self) -> Tensor:
        """Classifier class vectors ``W`` ``[C, D]``."""
        return self.classifier.weight

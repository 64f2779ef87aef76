"""Center loss (Wen et al. 2016): softmax CE plus a pull of each feature to its class center."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm, softmax_ce_terms


@register_loss("center")
class CenterLoss(EmbeddingLoss):
    """Softmax CE + ``λ · ½ · mean_i ‖x_i - c_{y_i}‖²`` on raw embeddings ``[B, D]``, labels ``[B]``.

    The classifier is a linear layer ``W x + b`` (``W`` ``[C, D]``). The centers ``c`` ``[C, D]``
    are a buffer (saved with the module, not seen by the optimiser) updated as in the paper: after
    each training forward, ``c_j ← c_j - α · Σ_{i: y_i = j} w_i (c_j - x_i) / (1 + Σ_{i: y_i = j} w_i)``
    under ``no_grad`` (sample weights ``w``, all ones when none are given: the paper's update), with
    ``α = 0.5``; the gradient of the center term reaches only the embeddings.
    Defaults ``λ = 0.003``, ``α = 0.5``. Distances are Euclidean on the raw embedding.
    Both terms are per-sample (``ce`` and ``center``, weighted by the row's weight).
    """

    classifier_kind = "linear"
    normalize_embeddings = False
    term_kinds = {"ce": "sample", "center": "sample"}
    centers: Tensor
    hyperparams = (
        HyperParam("lam", 0.003, "float", 0.0, 1.0, help="weight λ of the center term"),
        HyperParam("center_alpha", 0.5, "float", 0.0, 1.0, help="center update rate α"),
    )

    def __init__(self, num_classes: int, embedding_dim: int, **hyper: Any) -> None:
        super().__init__(num_classes, embedding_dim, **hyper)
        self.register_buffer("centers", torch.zeros(num_classes, embedding_dim))

    def center_distances(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """``½ ‖x_i - c_{y_i}‖²`` ``[B]`` for ``[B, D]`` and ``[B]``."""
        diff = embeddings.float() - self.centers[labels]
        return 0.5 * diff.pow(2).sum(dim=1)

    def center_term(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """``½ · mean_i ‖x_i - c_{y_i}‖²`` (without λ) for ``[B, D]`` and ``[B]``."""
        return self.center_distances(embeddings, labels).mean()

    @torch.no_grad()
    def update_centers(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> None:
        """One center step ``c_j -= α Σ_{y_i=j} w_i (c_j - x_i) / (1 + Σ_{y_i=j} w_i)`` from
        ``[B, D]``, ``[B]`` and optional weights ``[B]`` (default all ones)."""
        x = embeddings.detach().float()
        if weights is None:
            counts = torch.bincount(labels, minlength=self.num_classes).to(x.dtype)  # [C]
        else:
            w = weights.detach().to(x.dtype)
            counts = torch.zeros(self.num_classes, dtype=x.dtype, device=x.device).index_add_(0, labels, w)
            x = x * w[:, None]
        sums = torch.zeros_like(self.centers).index_add_(0, labels, x)  # [C, D]
        delta = (counts[:, None] * self.centers - sums) / (1.0 + counts[:, None])
        self.centers.sub_(self.hparams["center_alpha"] * delta)

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """Per-sample CE and center terms of ``embeddings`` ``[B, D]`` and ``labels`` ``[B]``."""
        ce = softmax_ce_terms(self.logits(embeddings), labels)
        center = LossTerm("center", self.center_distances(embeddings, labels), scale=self.hparams["lam"])
        return [*ce, center]

    def update_state(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None) -> None:
        """The center step after a training forward (:meth:`update_centers`)."""
        self.update_centers(embeddings, labels, weights)

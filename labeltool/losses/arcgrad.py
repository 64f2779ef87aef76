"""ArcGrad / angular loss ("Angular Learning: Toward Discriminative Embedded Features")."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm, softmax_ce_terms

_CLAMP = 1e-7


@register_loss("arcgrad")
class ArcGradLoss(EmbeddingLoss):
    """Angular softmax on embeddings ``[B, D]`` with labels ``[B]``; class weights ``W`` ``[C, D]``.

    ``θ_j = arccos(clamp(x̂ · Ŵ_j, -1 + 1e-7, 1 - 1e-7))`` and logits ``s · (π - θ_j)``
    (the same softmax as ``-s · θ_j``), then softmax cross-entropy. The paper asks for
    ``s > 3``; default 10. The angles are computed in float32 with autocast disabled, since
    arccos near ±1 in half precision returns NaN (the clamp bound rounds to 1). Per-sample
    (term ``ce``).
    """

    classifier_kind = "weights"
    term_kinds = {"ce": "sample"}
    hyperparams = (HyperParam("scale", 10.0, "float", 3.0, 64.0, help="angular scale s (paper: > 3)"),)

    def angles(self, embeddings: Tensor) -> Tensor:
        """Angles ``θ`` ``[B, C]`` (radians, float32) between embeddings ``[B, D]`` and ``W``."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return torch.acos(self.cosine(embeddings).clamp(-1.0 + _CLAMP, 1.0 - _CLAMP))

    def logits(self, embeddings: Tensor) -> Tensor:
        """Scores ``s · (π - θ)`` ``[B, C]`` (no margin, also used for training)."""
        return self.hparams["scale"] * (math.pi - self.angles(embeddings))

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """Per-sample angular CE of ``embeddings`` ``[B, D]`` with ``labels`` ``[B]``."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return softmax_ce_terms(self.logits(embeddings), labels)

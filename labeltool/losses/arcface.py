"""ArcFace: additive angular margin softmax (Deng et al. 2019; insightface)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm, softmax_ce_terms

_SIN_EPS = 1e-7


@register_loss("arcface")
class ArcFaceLoss(EmbeddingLoss):
    """ArcFace on embeddings ``[B, D]`` with labels ``[B]``; class weights ``W`` ``[C, D]``.

    ``cos θ_j = Ŵ_j · x̂``; the target logit is ``s · cos(θ_y + m)``, the others ``s · cos θ_j``,
    then softmax cross-entropy. ``cos(θ_y + m) = cos θ_y cos m - sin θ_y sin m`` with
    ``sin θ_y = sqrt(clamp(1 - cos² θ_y, eps))``; when ``cos θ_y < cos(π - m)`` (``θ_y + m``
    would pass π and the logit would start to grow again) it is replaced by
    ``cos θ_y - m sin m`` (insightface). Defaults: ``s = 30`` (authors; insightface uses 64),
    ``m = 0.5``. Inference logits are ``s · cos θ`` without margin. Per-sample (term ``ce``).
    """

    classifier_kind = "weights"
    term_kinds = {"ce": "sample"}
    hyperparams = (
        HyperParam("scale", 30.0, "float", 1.0, 128.0, help="logit scale s (30 authors, 64 insightface)"),
        HyperParam("margin", 0.5, "float", 0.0, 1.5, help="additive angular margin m (radians)"),
    )

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """Per-sample ArcFace CE of ``embeddings`` ``[B, D]`` with ``labels`` ``[B]``."""
        s, m = self.hparams["scale"], self.hparams["margin"]
        cos = self.cosine(embeddings)  # [B, C]
        cos_y = cos.gather(1, labels[:, None]).squeeze(1)  # [B]
        sin_y = torch.sqrt((1.0 - cos_y * cos_y).clamp_min(_SIN_EPS))
        with_margin = cos_y * math.cos(m) - sin_y * math.sin(m)
        target = torch.where(cos_y < math.cos(math.pi - m), cos_y - m * math.sin(m), with_margin)
        onehot = F.one_hot(labels, self.num_classes).to(cos.dtype)
        logits = s * (cos + onehot * (target - cos_y)[:, None])
        return softmax_ce_terms(logits, labels)

    def logits(self, embeddings: Tensor) -> Tensor:
        """Inference scores ``s · cos θ`` ``[B, C]`` (no margin)."""
        return self.hparams["scale"] * self.cosine(embeddings)

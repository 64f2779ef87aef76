"""Contrastive loss (Hadsell, Chopra, LeCun 2006) over all pairs of the batch."""

from __future__ import annotations

import torch
from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm, l2_normalize, pairwise_distances


@register_loss("contrastive")
class ContrastiveLoss(EmbeddingLoss):
    """Pairwise contrastive loss on L2-normalised embeddings ``[B, D]`` with labels ``[B]``.

    For every pair ``i < j`` with ``y = [label_i == label_j]`` and non-squared Euclidean distance
    ``d``: ``y * d^2 + (1 - y) * max(0, m - d)^2``, averaged over the ``B (B - 1) / 2`` pairs;
    ``m = 1.0``. Sample weights: each pair weighs ``w_i · w_j``.
    """

    term_kinds = {"pairs": "pair"}
    hyperparams = (HyperParam("margin", 1.0, "float", 0.0, 2.0, help="margin m for dissimilar pairs"),)

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """One value per pair ``i < j`` of ``embeddings`` ``[B, D]`` and ``labels`` ``[B]`` (all labeled)."""
        b = embeddings.shape[0]
        if b < 2:
            return []
        x = l2_normalize(embeddings.float())
        d2 = pairwise_distances(x, squared=True)  # [B, B]
        d = pairwise_distances(x, squared=False)  # [B, B]
        iu = torch.triu_indices(b, b, offset=1, device=x.device)
        same = (labels[iu[0]] == labels[iu[1]]).to(x.dtype)  # [P]
        d2_pairs, d_pairs = d2[iu[0], iu[1]], d[iu[0], iu[1]]
        per_pair = same * d2_pairs + (1.0 - same) * torch.relu(self.hparams["margin"] - d_pairs).pow(2)
        return [LossTerm("pairs", per_pair, iu.T)]

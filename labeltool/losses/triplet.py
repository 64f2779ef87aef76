"""Semi-hard triplet loss (Schroff et al. 2015, FaceNet; TensorFlow ``triplet_semihard_loss``)."""

from __future__ import annotations

import torch
from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, l2_normalize, pairwise_distances


def semihard_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float, squared: bool = True) -> Tensor:
    """Semi-hard triplet loss of ``embeddings`` ``[B, D]`` (used as given) with ``labels`` ``[B]``.

    For each positive pair ``(a, p)``, ``a != p``, the negative is the one with the smallest
    ``d(a, n) > d(a, p)``; when there is none, the negative farthest from ``a``. Returns the mean
    over all positive pairs of ``max(0, margin + d(a, p) - d(a, n))``; zero (with a gradient path)
    when the batch has no positive pair or no negative.

    Vectorised: each anchor's negative distances are sorted once and every positive distance is
    looked up with ``searchsorted`` (memory ``O(B^2)``).
    """
    b = embeddings.shape[0]
    zero = embeddings.sum() * 0.0
    if b < 2:
        return zero
    dist = pairwise_distances(embeddings, squared=squared)  # [B, B]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(b, dtype=torch.bool, device=embeddings.device)
    pos_mask = same & ~eye  # [B, B] anchor x positive
    neg_mask = ~same  # [B, B] anchor x negative
    if not bool(pos_mask.any()) or not bool(neg_mask.any()):
        return zero
    # Negatives sorted by distance per anchor; non-negatives pushed to +inf at the end.
    neg_dist = dist.masked_fill(~neg_mask, float("inf"))
    sorted_neg, _ = torch.sort(neg_dist, dim=1)  # [B, B]
    num_neg = neg_mask.sum(dim=1)  # [B]
    # Index of the first negative strictly farther than each positive: [B(anchor), B(positive)].
    idx = torch.searchsorted(sorted_neg.detach().contiguous(), dist.detach().contiguous(), right=True)
    has_semihard = idx < num_neg[:, None]
    last = (num_neg - 1).clamp_min(0)[:, None].expand(b, b)
    pick = torch.where(has_semihard, idx, last)
    d_an = torch.gather(sorted_neg, 1, pick)  # [B, B]
    # Anchors without any negative never occur once the batch holds two classes; keep them finite.
    d_an = torch.where(torch.isfinite(d_an), d_an, torch.zeros_like(d_an))
    hinge = torch.relu(margin + dist - d_an)
    return hinge[pos_mask].mean()


@register_loss("triplet")
class TripletLoss(EmbeddingLoss):
    """Semi-hard triplet loss on L2-normalised embeddings ``[B, D]`` with labels ``[B]``.

    Distances are squared Euclidean (as the authors' code), margin ``m = 1.0``:
    ``mean over positive pairs (a, p) of max(0, m + d(a, p) - d(a, n*))`` where ``n*`` is the
    semi-hard negative (closest one farther than ``p``), or the farthest negative when none is.
    """

    hyperparams = (
        HyperParam("margin", 1.0, "float", 0.0, 4.0, help="triplet margin m"),
        HyperParam("squared", True, "bool", help="squared L2 distance (authors' code) instead of L2"),
    )

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scalar loss of ``embeddings`` ``[B, D]`` and ``labels`` ``[B]`` (all labeled)."""
        x = l2_normalize(embeddings.float())
        return semihard_triplet_loss(x, labels, self.hparams["margin"], self.hparams["squared"])

"""Semi-hard triplet loss (Schroff et al. 2015, FaceNet; TensorFlow ``triplet_semihard_loss``)."""

from __future__ import annotations

import torch
from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm, l2_normalize, pairwise_distances


def semihard_triplets(
    embeddings: Tensor, labels: Tensor, margin: float, squared: bool = True
) -> tuple[Tensor, Tensor] | None:
    """Hinges ``[P]`` and their rows ``[P, 3]`` (anchor, positive, negative), one per positive pair.

    For each positive pair ``(a, p)``, ``a != p`` (row-major order), the negative is the one with
    the smallest ``d(a, n) > d(a, p)``; when there is none, the negative farthest from ``a``. The
    hinge is ``max(0, margin + d(a, p) - d(a, n))``. ``None`` when the batch has no positive pair
    or no negative.

    Vectorised: each anchor's negative distances are sorted once and every positive distance is
    looked up with ``searchsorted`` (memory ``O(B^2)``).
    """
    b = embeddings.shape[0]
    if b < 2:
        return None
    dist = pairwise_distances(embeddings, squared=squared)  # [B, B]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(b, dtype=torch.bool, device=embeddings.device)
    pos_mask = same & ~eye  # [B, B] anchor x positive
    neg_mask = ~same  # [B, B] anchor x negative
    if not bool(pos_mask.any()) or not bool(neg_mask.any()):
        return None
    # Negatives sorted by distance per anchor; non-negatives pushed to +inf at the end.
    neg_dist = dist.masked_fill(~neg_mask, float("inf"))
    sorted_neg, order = torch.sort(neg_dist, dim=1)  # [B, B]
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
    pairs = pos_mask.nonzero()  # [P, 2], the order of hinge[pos_mask]
    rows = torch.cat([pairs, order.gather(1, pick)[pos_mask][:, None]], dim=1)  # [P, 3]
    return hinge[pos_mask], rows


def semihard_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float, squared: bool = True) -> Tensor:
    """Semi-hard triplet loss of ``embeddings`` ``[B, D]`` (used as given) with ``labels`` ``[B]``:
    the mean over all positive pairs of the hinges of :func:`semihard_triplets`; zero (with a
    gradient path) when the batch has no positive pair or no negative."""
    found = semihard_triplets(embeddings, labels, margin, squared)
    return embeddings.sum() * 0.0 if found is None else found[0].mean()


@register_loss("triplet")
class TripletLoss(EmbeddingLoss):
    """Semi-hard triplet loss on L2-normalised embeddings ``[B, D]`` with labels ``[B]``.

    Distances are squared Euclidean (as the authors' code), margin ``m = 1.0``:
    ``mean over positive pairs (a, p) of max(0, m + d(a, p) - d(a, n*))`` where ``n*`` is the
    semi-hard negative (closest one farther than ``p``), or the farthest negative when none is.
    Sample weights: each triplet weighs ``w_a · w_p · w_n*`` (the negative is chosen without
    looking at weights, so a row of weight 0 picked as ``n*`` silences that triplet).
    """

    term_kinds = {"triplet": "triplet"}
    hyperparams = (
        HyperParam("margin", 1.0, "float", 0.0, 4.0, help="triplet margin m"),
        HyperParam("squared", True, "bool", help="squared L2 distance (authors' code) instead of L2"),
    )

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """One hinge per positive pair of ``embeddings`` ``[B, D]`` and ``labels`` ``[B]`` (all labeled)."""
        x = l2_normalize(embeddings.float())
        found = semihard_triplets(x, labels, self.hparams["margin"], self.hparams["squared"])
        return [] if found is None else [LossTerm("triplet", found[0], found[1])]

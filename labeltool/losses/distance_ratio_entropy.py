"""Distance-ratio + min-entropy loss (Hoffer & Ailon, "Semi-supervised deep learning by metric embedding")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm

_SQRT_EPS = 1e-8


def pick_references(labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Indices ``[K]`` of one random row per class present in ``labels`` ``[B]`` (``-1`` ignored).

    Ordered by class id. The draw uses ``generator`` (CPU) or torch's global RNG.
    """
    labeled = torch.nonzero(labels >= 0).squeeze(1)  # [L]
    if labeled.numel() == 0:
        return labeled
    perm = torch.randperm(labeled.numel(), generator=generator).to(labels.device)
    shuffled = labeled[perm]
    order = shuffled[torch.argsort(labels[shuffled], stable=True)]  # rows grouped by class
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return order[starts]


def reference_log_probs(embeddings: Tensor, refs: Tensor) -> Tensor:
    """``log P`` ``[B, K]``: ``log_softmax_k(-sqrt(‖x_b - r_k‖² + eps))`` for ``[B, D]`` and ``[K, D]``."""
    d2 = (
        embeddings.pow(2).sum(1, keepdim=True) + refs.pow(2).sum(1)[None, :] - 2.0 * embeddings @ refs.T
    ).clamp_min(0.0)
    return F.log_softmax(-torch.sqrt(d2 + _SQRT_EPS), dim=1)


@register_loss("distance_ratio_entropy")
class DistanceRatioEntropyLoss(EmbeddingLoss):
    """Hoffer & Ailon on raw embeddings ``[B, D]`` with labels ``[B]`` (``-1`` = unlabeled).

    Each step draws one labeled reference ``x_c`` per class ``c`` present in the batch;
    ``P(x)_c = softmax_c(-‖F(x) - F(x_c)‖₂)`` (eps inside the sqrt). Distance-ratio loss
    ``L_L = mean(-log P_y)`` over the labeled rows other than the references; min-entropy loss
    ``L_U = mean(H(P))``, ``H = -Σ P log P``, over the unlabeled rows. Total
    ``λ_L · L_L + λ_U · L_U`` (both 1). References come from a CPU generator seeded with
    ``seed`` (reproducible runs), or torch's global RNG when ``seed < 0``.

    Sample weights: both terms are per anchor (each row's ``P`` is computed against the
    references): ``distance_ratio`` weighted by the labeled row's weight, ``min_entropy`` by the
    unlabeled row's. The references' own weights do not enter, nor do weights affect their draw.
    """

    uses_unlabeled = True
    normalize_embeddings = False
    term_kinds = {"distance_ratio": "anchor", "min_entropy": "anchor"}
    hyperparams = (
        HyperParam("lambda_labeled", 1.0, "float", 0.0, 10.0, help="weight λ_L of the distance-ratio loss"),
        HyperParam("lambda_unlabeled", 1.0, "float", 0.0, 10.0, help="weight λ_U of the min-entropy loss"),
        HyperParam("seed", 0, "int", -1, 2**31 - 1, help="seed of the reference draws (-1: global RNG)"),
    )

    def __init__(self, num_classes: int, embedding_dim: int, **hyper: Any) -> None:
        super().__init__(num_classes, embedding_dim, **hyper)
        seed = int(self.hparams["seed"])
        self._generator: torch.Generator | None = None
        if seed >= 0:
            self._generator = torch.Generator().manual_seed(seed)

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """Distance-ratio and min-entropy terms of ``embeddings`` ``[B, D]`` and ``labels`` ``[B]``."""
        x = embeddings.float()
        refs = pick_references(labels, self._generator)  # [K]
        if refs.numel() == 0:
            return []
        ref_classes = labels[refs]  # [K], ascending
        log_p = reference_log_probs(x, x[refs])  # [B, K]
        is_ref = torch.zeros_like(labels, dtype=torch.bool)
        is_ref[refs] = True
        sup = (labels >= 0) & ~is_ref
        unsup = labels < 0
        terms = []
        if bool(sup.any()):
            target = torch.searchsorted(ref_classes, labels[sup])  # position of each row's class
            ratio = F.nll_loss(log_p[sup], target, reduction="none")
            terms.append(LossTerm("distance_ratio", ratio, sup, self.hparams["lambda_labeled"], nll_order=True))
        if bool(unsup.any()):
            lp = log_p[unsup]
            entropy = -(lp.exp() * lp).sum(dim=1)
            terms.append(LossTerm("min_entropy", entropy, unsup, self.hparams["lambda_unlabeled"]))
        return terms

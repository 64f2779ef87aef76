"""FixMatch-style consistency training (Sohn et al. 2020), composable with every loss.

Class predictions come from an auxiliary linear classifier ``Linear(D, C)`` on the head's
embedding, trained with cross-entropy on the labeled rows of each batch. It is used whatever
the loss, also when the loss has a classifier of its own: one rule for every loss, and the
loss's own parameters see only its own objective. For each unlabeled image the weak view's
softmax gives a pseudo-label (argmax, no gradient) kept where its probability reaches the
threshold; the strong view is trained towards it:

    loss_u = mean over the U unlabeled images of mask · CE(aux(emb(strong)), pseudo)

and a step's total is ``loss(labeled [+ weak unlabeled rows]) + CE_aux(labeled) + λ_u · loss_u``.
The share of unlabeled images above the threshold (``mask`` rate) is reported; how many of the
pseudo-labels are right is unknown (the unlabeled images have no truth).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["ConsistencyTerms", "aux_classifier", "consistency_loss", "consistency_terms", "pseudo_labels"]


def aux_classifier(embedding_dim: int, num_classes: int) -> nn.Linear:
    """A fresh auxiliary classifier ``[B, D]`` → logits ``[B, C]``."""
    return nn.Linear(embedding_dim, num_classes)


@torch.no_grad()
def pseudo_labels(weak_logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``(pseudo [U] int64, mask [U] float32)`` from weak-view logits ``[U, C]``: the argmax of
    the softmax, and 1 where its probability is at least ``threshold`` (else 0). No gradient."""
    probs = torch.softmax(weak_logits.float(), dim=1)
    confidence, pseudo = probs.max(dim=1)
    return pseudo, (confidence >= threshold).float()


def consistency_loss(strong_logits: Tensor, pseudo: Tensor, mask: Tensor) -> Tensor:
    """Mean over the ``U`` rows of ``mask · CE(strong_logits, pseudo)`` (logits ``[U, C]``,
    ``pseudo`` and ``mask`` ``[U]``); rows below the threshold count as zeros in the mean."""
    if strong_logits.shape[0] == 0:
        return strong_logits.sum() * 0.0
    per_row = nn.functional.cross_entropy(strong_logits.float(), pseudo, reduction="none")
    return (per_row * mask).mean()


@dataclass
class ConsistencyTerms:
    """One step's extra terms: ``supervised`` (CE of the aux classifier on the labeled rows),
    ``unlabeled`` (``loss_u``) and ``mask_rate`` (share of unlabeled rows above the threshold)."""

    supervised: Tensor
    unlabeled: Tensor
    mask_rate: float


def consistency_terms(aux: nn.Module, embeddings: Tensor, labels: Tensor, strong: Tensor,
                      threshold: float) -> ConsistencyTerms:
    """The aux-classifier terms of a batch: ``embeddings`` ``[B, D]`` with ``labels`` ``[B]``
    (``-1`` = unlabeled, weak view) and ``strong`` ``[U, D]``, the strong views of the unlabeled
    rows in the same order (``U`` = number of ``-1`` rows). A batch without labeled rows gets a
    zero supervised term."""
    labeled = labels >= 0
    supervised = (nn.functional.cross_entropy(aux(embeddings[labeled]).float(), labels[labeled])
                  if bool(labeled.any()) else embeddings.sum() * 0.0)  # all labeled files failed to decode
    weak = embeddings[~labeled]
    if weak.shape[0] != strong.shape[0]:
        raise ValueError(f"{weak.shape[0]} weak unlabeled rows but {strong.shape[0]} strong views")
    if weak.shape[0] == 0:
        return ConsistencyTerms(supervised, supervised * 0.0, 0.0)
    pseudo, mask = pseudo_labels(aux(weak), threshold)
    unlabeled = consistency_loss(aux(strong), pseudo, mask)
    return ConsistencyTerms(supervised, unlabeled, float(mask.mean()))

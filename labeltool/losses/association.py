"""Learning by Association (Haeusser, Mordvintsev, Cremers 2017): walker, visit and logit losses."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam

LOG_EPS = 1e-8


def walk_target(labels: Tensor) -> Tensor:
    """``T`` ``[A, A]``: ``T_ij = [y_i = y_j] / #{k: y_k = y_i}`` for labels ``[A]``; rows sum to 1."""
    same = (labels[:, None] == labels[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def round_trip(scores_ab: Tensor) -> tuple[Tensor, Tensor]:
    """``(P^{ab} [A, B], P^{aba} [A, A])`` from similarity scores ``[A, B]``.

    ``P^{ab} = softmax_row(S)``, ``P^{ba} = softmax_row(Sᵀ)``, ``P^{aba} = P^{ab} P^{ba}``.
    """
    p_ab = F.softmax(scores_ab, dim=1)
    p_ba = F.softmax(scores_ab.T, dim=1)
    return p_ab, p_ab @ p_ba


def walker_loss(p_aba: Tensor, labels: Tensor) -> Tensor:
    """``mean_i CE(T_i, P^{aba}_i)`` for round trips ``[A, A]`` and labeled classes ``[A]``."""
    return -(walk_target(labels) * torch.log(p_aba + LOG_EPS)).sum(dim=1).mean()


def visit_loss(p_ab: Tensor) -> Tensor:
    """``CE(uniform(1/B), mean_i P^{ab}_i)`` for ``P^{ab}`` ``[A, B]``."""
    visit = p_ab.mean(dim=0)  # [B]
    return -torch.log(visit + LOG_EPS).mean()


def split_labeled(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(A [nA, D], y_A [nA], B [nB, D])``: labeled rows, their labels, unlabeled rows."""
    lab = labels >= 0
    return embeddings[lab], labels[lab], embeddings[~lab]


@register_loss("association")
class AssociationLoss(EmbeddingLoss):
    """Association losses on raw embeddings ``[B, D]`` with labels ``[B]`` (``-1`` = unlabeled).

    Labeled rows ``A``, unlabeled rows ``B``; ``M = A Bᵀ`` (raw dot product), ``P^{ab}``,
    ``P^{ba}``, ``P^{aba}`` as in the paper. Loss = ``w_walker · walker + w_visit · visit +
    w_logit · CE(classifier(A), y_A)`` with ``1e-8`` inside the logs; defaults 1, 1, 1 (lower the
    visit weight when the unlabeled pool holds classes absent from the labeled batch). Without
    unlabeled rows only the logit loss is used. The classifier is ``Linear(D, C)``.
    """

    uses_unlabeled = True
    has_classifier = True
    normalize_embeddings = False
    hyperparams = (
        HyperParam("walker_weight", 1.0, "float", 0.0, 10.0, help="weight of the walker loss"),
        HyperParam("visit_weight", 1.0, "float", 0.0, 10.0, help="weight of the visit loss"),
        HyperParam("logit_weight", 1.0, "float", 0.0, 10.0, help="weight of the classifier CE"),
    )

    def __init__(self, num_classes: int, embedding_dim: int, **hyper: Any) -> None:
        super().__init__(num_classes, embedding_dim, **hyper)
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scalar loss of ``embeddings`` ``[B, D]`` and ``labels`` ``[B]``."""
        x = embeddings.float()
        a, y, b = split_labeled(x, labels)
        loss = x.sum() * 0.0
        if a.shape[0] == 0:
            return loss
        loss = loss + self.hparams["logit_weight"] * F.cross_entropy(self.logits(a), y)
        if b.shape[0] > 0:
            p_ab, p_aba = round_trip(a @ b.T)
            loss = loss + self.hparams["walker_weight"] * walker_loss(p_aba, y)
            loss = loss + self.hparams["visit_weight"] * visit_loss(p_ab)
        return loss

    def logits(self, embeddings: Tensor) -> Tensor:
        """Class scores ``[B, C]`` of the linear head."""
        return self.classifier(embeddings.float())

    def class_weights(self) -> Tensor:
        """Classifier class vectors ``[C, D]``."""
        return self.classifier.weight

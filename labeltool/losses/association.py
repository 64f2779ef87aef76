"""Learning by Association (Haeusser, Mordvintsev, Cremers 2017): walker, visit and logit losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm, softmax_ce_terms

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


def walker_per_anchor(p_aba: Tensor, labels: Tensor) -> Tensor:
    """``CE(T_i, P^{aba}_i)`` ``[A]`` for round trips ``[A, A]`` and labeled classes ``[A]``."""
    return -(walk_target(labels) * torch.log(p_aba + LOG_EPS)).sum(dim=1)


def walker_loss(p_aba: Tensor, labels: Tensor) -> Tensor:
    """``mean_i CE(T_i, P^{aba}_i)`` for round trips ``[A, A]`` and labeled classes ``[A]``."""
    return walker_per_anchor(p_aba, labels).mean()


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

    Sample weights: ``logit`` is per-sample and ``walker`` per labeled anchor (its round trip
    passes through every row), both weighted by the labeled row's weight; ``visit`` is
    batch-level and ignores them, so unlabeled rows' weights have no effect.
    """

    uses_unlabeled = True
    classifier_kind = "linear"
    normalize_embeddings = False
    term_kinds = {"logit": "sample", "walker": "anchor", "visit": "batch"}
    hyperparams = (
        HyperParam("walker_weight", 1.0, "float", 0.0, 10.0, help="weight of the walker loss"),
        HyperParam("visit_weight", 1.0, "float", 0.0, 10.0, help="weight of the visit loss"),
        HyperParam("logit_weight", 1.0, "float", 0.0, 10.0, help="weight of the classifier CE"),
    )

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """Logit, walker and visit terms of ``embeddings`` ``[B, D]`` and ``labels`` ``[B]``."""
        x = embeddings.float()
        lab = labels >= 0
        a, y, b = split_labeled(x, labels)
        if a.shape[0] == 0:
            return []
        terms = softmax_ce_terms(self.logits(a), y, name="logit", rows=lab, scale=self.hparams["logit_weight"])
        if b.shape[0] > 0:
            p_ab, p_aba = round_trip(a @ b.T)
            terms.append(LossTerm("walker", walker_per_anchor(p_aba, y), lab, self.hparams["walker_weight"]))
            terms.append(LossTerm("visit", visit_loss(p_ab), scale=self.hparams["visit_weight"]))
        return terms

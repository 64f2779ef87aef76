"""Learning to learn by association: association losses on a learned metric network (Mnet)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labeltool.losses import register_loss
from labeltool.losses.association import round_trip, split_labeled, visit_loss, walk_target, walker_per_anchor
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm, softmax_ce_terms

HIDDEN = (64, 32, 32, 16, 16)


class PairMetric(nn.Module):
    """Mnet: a shared MLP scoring every pair ``[a_i; b_j]`` (Linear-BN-ReLU x5, then Linear to 1).

    The first layer on the concatenation equals ``W_a a_i + W_b b_j + bias``, so it is applied to
    ``a`` and ``b`` separately and broadcast over the pairs (same function, less memory).
    """

    def __init__(self, dim: int, hidden: tuple[int, ...] = HIDDEN) -> None:
        super().__init__()
        self.dim = dim
        self.first = nn.Linear(2 * dim, hidden[0])
        self.first_norm = nn.BatchNorm1d(hidden[0])
        layers: list[nn.Module] = []
        for h_in, h_out in zip(hidden[:-1], hidden[1:], strict=True):
            layers += [nn.Linear(h_in, h_out), nn.BatchNorm1d(h_out), nn.ReLU()]
        layers.append(nn.Linear(hidden[-1], 1))
        self.rest = nn.Sequential(*layers)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Raw scores ``[n, m]`` (logits; sigmoid gives a probability) for ``a`` ``[n, D]``, ``b`` ``[m, D]``."""
        n, m = a.shape[0], b.shape[0]
        w_a, w_b = self.first.weight[:, : self.dim], self.first.weight[:, self.dim :]
        h = (a @ w_a.T)[:, None, :] + (b @ w_b.T)[None, :, :] + self.first.bias  # [n, m, H0]
        h = F.relu(self.first_norm(h.reshape(n * m, -1)))
        return self.rest(h).reshape(n, m)


def similarity_triplet(prob: Tensor, pos: Tensor, neg: Tensor, margin: float) -> Tensor:
    """``mean max(0, p[i, k] - p[i, j] + margin)`` over anchors ``i``, positives ``j``, negatives ``k``.

    ``prob``, ``pos``, ``neg``: ``[n, k]`` (similarities and boolean masks). Higher similarity to
    a negative than to a positive is penalised. Zero when no (anchor, positive, negative) exists.

    Computed without the ``[n, j, k]`` cube: for each anchor the negatives are sorted once, and
    every positive ``j`` reads how many negatives exceed ``p[i, j] - margin`` and their sum from
    suffix sums, ``sum_k relu(p_k - t) = sum_{p_k > t} p_k - count_{p_k > t} * t``. Same value
    and gradient, ``O(n k log k)`` time and ``O(n k)`` memory.
    """
    count = (pos.sum(dim=1) * neg.sum(dim=1)).sum()
    if int(count) == 0:
        return prob.sum() * 0.0
    threshold = prob - margin  # [n, k]: a negative counts for positive j when p_k > p_j - margin
    below_all = threshold.detach().min() - 1.0  # non-negatives sort first and never count
    values, _ = torch.sort(torch.where(neg, prob, below_all), dim=1)  # [n, k] ascending
    suffix = torch.flip(torch.cumsum(torch.flip(values, [1]), dim=1), [1])  # sum of values[c:]
    suffix = F.pad(suffix, (0, 1))  # [n, k + 1]; nothing above the largest value
    first_above = torch.searchsorted(values.detach().contiguous(), threshold.detach().contiguous(), right=True)
    above = (values.shape[1] - first_above).to(prob.dtype)  # [n, k]: negatives above each threshold
    hinge_sums = suffix.gather(1, first_above) - above * threshold  # [n, k]
    return (hinge_sums * pos).sum() / count


def _flags(prefix: str, help_text: str) -> tuple[HyperParam, HyperParam]:
    return (
        HyperParam(f"use_{prefix}", True, "bool", help=f"use the {help_text}"),
        HyperParam(f"{prefix}_weight", 1.0, "float", 0.0, 10.0, help=f"weight of the {help_text}"),
    )


@register_loss("mnet_association")
class MnetAssociationLoss(EmbeddingLoss):
    """Association with a learned metric on raw embeddings ``[B, D]``, labels ``[B]`` (``-1`` = unlabeled).

    ``S = Mnet(A, B)`` ``[nA, nB]`` replaces ``M = A Bᵀ``: ``P^{ab} = softmax_row(S)``,
    ``P^{ba} = softmax_row(Sᵀ)`` (one score per pair, used in both directions). Terms, each with a
    ``use_*`` switch and a ``*_weight`` (defaults: all on, weight 1):

    - ``walker`` ``mean_i CE(T_i, P^{aba}_i)`` and ``visit`` ``CE(uniform, mean_i P^{ab}_i)``;
    - ``logit``: softmax CE of the linear head ``Linear(D, C)`` on ``A``;
    - ``comparison``: ``CE(T, softmax_row(Mnet(A, A)))``;
    - similarity triplets ``max(0, p_neg - p_pos + m)``, ``m = 1.5``: ``sup_triplet`` on
      ``sigmoid(Mnet(A, A))`` and ``semi_triplet`` on ``P^{aba}`` (anchor ``i``, positives other
      rows of its class, negatives rows of other classes); ``weak_triplet`` on the class-averaged
      ``sigmoid(Mnet(A, B))`` ``[C', nB]``, where each unlabeled row's positive is its
      highest-scoring class (a detached pseudo-label) and the other classes are negatives.

    The authors' default (non-hard-mining) code has the sign of the similarity triplet inverted
    (it rewards a negative that is more similar than the positive); the paper's intended
    direction is implemented here. Memory grows as ``nA · (nA + nB)`` pairs, fine up to ~256 x 256.

    Sample weights: ``logit`` is per-sample, ``comparison`` and ``walker`` per labeled anchor, all
    weighted by the labeled row's weight; ``visit`` and the three similarity triplets are
    batch-level and ignore them. The terms are summed in one stack (``combine = "stack"``).
    """

    uses_unlabeled = True
    classifier_kind = "linear"
    normalize_embeddings = False
    combine = "stack"
    term_kinds = {
        "logit": "sample", "comparison": "anchor", "walker": "anchor", "visit": "batch",
        "sup_triplet": "batch", "semi_triplet": "batch", "weak_triplet": "batch",
    }
    hyperparams = (
        *_flags("walker", "walker loss"),
        *_flags("visit", "visit loss"),
        *_flags("logit", "classifier CE on labeled rows"),
        *_flags("comparison", "supervised comparison loss CE(T, softmax(Mnet(A, A)))"),
        *_flags("sup_triplet", "supervised similarity triplet on sigmoid(Mnet(A, A))"),
        *_flags("semi_triplet", "semi-supervised similarity triplet on P^aba"),
        *_flags("weak_triplet", "weakly supervised similarity triplet on class-averaged sigmoid(Mnet(A, B))"),
        HyperParam("triplet_margin", 1.5, "float", 0.0, 3.0, help="margin m of the similarity triplets"),
    )

    def __init__(self, num_classes: int, embedding_dim: int, **hyper: Any) -> None:
        super().__init__(num_classes, embedding_dim, **hyper)
        self.mnet = PairMetric(embedding_dim)

    def _on(self, term: str) -> bool:
        return bool(self.hparams[f"use_{term}"]) and self.hparams[f"{term}_weight"] > 0

    def pair_scores(self, a: Tensor, b: Tensor) -> Tensor:
        """Mnet scores ``[n, m]`` for ``a`` ``[n, D]`` and ``b`` ``[m, D]`` (sigmoid -> probability)."""
        return self.mnet(a.float(), b.float())

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """The enabled terms for ``embeddings`` ``[B, D]`` and ``labels`` ``[B]``, each with its weight."""
        x = embeddings.float()
        lab = labels >= 0
        a, y, b = split_labeled(x, labels)
        n_a, n_b = a.shape[0], b.shape[0]
        m = self.hparams["triplet_margin"]
        w = self.hparams
        terms: list[LossTerm] = []
        if n_a == 0:
            return terms
        if self._on("logit"):
            terms += softmax_ce_terms(self.logits(a), y, name="logit", rows=lab, scale=w["logit_weight"])
        if n_a * (n_a + n_b) < 2:  # BatchNorm needs more than one pair
            return terms
        scores = self.pair_scores(a, torch.cat([a, b]))  # [nA, nA + nB]
        s_aa, s_ab = scores[:, :n_a], scores[:, n_a:]
        same = y[:, None] == y[None, :]
        pos = same & ~torch.eye(n_a, dtype=torch.bool, device=x.device)
        if self._on("comparison"):
            comp = -(walk_target(y) * F.log_softmax(s_aa, dim=1)).sum(dim=1)  # [nA]
            terms.append(LossTerm("comparison", comp, lab, w["comparison_weight"]))
        if self._on("sup_triplet"):
            trip = similarity_triplet(torch.sigmoid(s_aa), pos, ~same, m)
            terms.append(LossTerm("sup_triplet", trip, scale=w["sup_triplet_weight"]))
        if n_b > 0:
            terms += self._unlabeled_terms(s_ab, y, lab, pos, ~same)
        return terms

    def _unlabeled_terms(self, s_ab: Tensor, y: Tensor, lab: Tensor, pos: Tensor, neg: Tensor) -> list[LossTerm]:
        """Walker, visit, semi- and weakly supervised triplet terms from scores ``[nA, nB]``."""
        w, m = self.hparams, self.hparams["triplet_margin"]
        terms: list[LossTerm] = []
        p_ab, p_aba = round_trip(s_ab)
        if self._on("walker"):
            terms.append(LossTerm("walker", walker_per_anchor(p_aba, y), lab, w["walker_weight"]))
        if self._on("visit"):
            terms.append(LossTerm("visit", visit_loss(p_ab), scale=w["visit_weight"]))
        if self._on("semi_triplet"):
            terms.append(LossTerm("semi_triplet", similarity_triplet(p_aba, pos, neg, m), scale=w["semi_triplet_weight"]))
        if self._on("weak_triplet"):
            weak = self._weak_triplet(torch.sigmoid(s_ab), y, m)
            terms.append(LossTerm("weak_triplet", weak, scale=w["weak_triplet_weight"]))
        return terms

    @staticmethod
    def _weak_triplet(prob_ab: Tensor, y: Tensor, margin: float) -> Tensor:
        """Triplet on class-averaged similarities ``[C', nB]`` built from ``prob_ab`` ``[nA, nB]``."""
        classes, inverse = torch.unique(y, return_inverse=True)
        member = F.one_hot(inverse, classes.numel()).to(prob_ab.dtype)  # [nA, C']
        per_class = (member.T @ prob_ab) / member.sum(dim=0)[:, None]  # [C', nB]
        q = per_class.T  # [nB, C']
        pos = F.one_hot(q.detach().argmax(dim=1), classes.numel()).bool()
        return similarity_triplet(q, pos, ~pos, margin)

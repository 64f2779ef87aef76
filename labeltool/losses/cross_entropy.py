"""Softmax cross-entropy on a linear classifier over the embedding (Sahito et al. baseline)."""

from __future__ import annotations

from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm, softmax_ce_terms


@register_loss("cross_entropy")
class CrossEntropyLoss(EmbeddingLoss):
    """Linear classifier ``W x + b`` on the embedding, trained with softmax cross-entropy.

    Per-sample: ``-log p_y`` of each labeled row (term ``ce``; with label smoothing ``ε`` also
    ``-Σ_c log p_c`` scaled ``ε / C``, term ``ce_smoothing``), weighted by the row's weight.
    Suggestion confidence for this loss is the maximum softmax probability.
    """

    classifier_kind = "linear"
    term_kinds = {"ce": "sample", "ce_smoothing": "sample"}
    hyperparams = (
        HyperParam("label_smoothing", 0.0, "float", 0.0, 0.5, help="label smoothing of the targets"),
    )

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """Per-sample CE of the ``[B]`` labeled rows of ``embeddings`` ``[B, D]``."""
        return softmax_ce_terms(self.logits(embeddings), labels, label_smoothing=self.hparams["label_smoothing"])

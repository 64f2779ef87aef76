"""Weights-biased softmax (W-Softmax): negative class weights biased towards the target."""

from __future__ import annotations

import torch
from torch import Tensor

from labeltool.losses import register_loss
from labeltool.losses.base import EmbeddingLoss, HyperParam, LossTerm, softmax_ce_terms


@register_loss("w_softmax")
class WSoftmaxLoss(EmbeddingLoss):
    """W-Softmax on embeddings ``[B, D]`` with labels ``[B]``; class weights ``W`` ``[C, D]``.

    No bias; each ``W_j`` is L2-normalised (``Ŵ_j``), the embedding is not. For a sample of class
    ``y`` the positive logit is ``Ŵ_y · x`` and each negative weight is replaced by
    ``W̃_j = (Ŵ_j + α Ŵ_y) / ‖Ŵ_j + α Ŵ_y‖`` (``j ≠ y``), logit ``W̃_j · x``; then softmax CE.
    ``α = 0`` is normalised-weight softmax; larger ``α`` gives a larger margin (paper: 0.5, 1, 1.5).
    Test-time logits use the original ``Ŵ``. Per-sample (term ``ce``).

    Computed without materialising ``W̃``: ``W̃_j · x = (Ŵ_j·x + α Ŵ_y·x) / sqrt(1 + α² + 2α Ŵ_j·Ŵ_y)``,
    which for ``j = y`` reduces to ``Ŵ_y · x`` as required.

    Pitfall: the embedding is unnormalised, so once the labels are fit the loss keeps falling by
    growing ``‖x‖`` while the class weights drift together. A continued round that restarts Adam
    takes full-size steps in that direction (accuracy 98% → 14% over eight rounds); continued
    rounds therefore resume the optimizer's moments (:mod:`labeltool.train.optim_state`).
    """

    classifier_kind = "weights"
    term_kinds = {"ce": "sample"}
    hyperparams = (HyperParam("alpha", 1.0, "float", 0.0, 2.0, help="bias α of negatives towards W_y"),)

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """Per-sample W-Softmax CE of ``embeddings`` ``[B, D]`` with ``labels`` ``[B]``."""
        alpha = self.hparams["alpha"]
        w = self.normalized_class_weights()  # [C, D]
        plain = embeddings.float() @ w.T  # [B, C]  Ŵ_j · x
        target = plain.gather(1, labels[:, None])  # [B, 1]  Ŵ_y · x
        gram = (w @ w.T)[labels]  # [B, C]  Ŵ_y · Ŵ_j
        norm = torch.sqrt((1.0 + alpha * alpha + 2.0 * alpha * gram).clamp_min(1e-12))
        biased = (plain + alpha * target) / norm  # [B, C]
        return softmax_ce_terms(biased, labels)

    def logits(self, embeddings: Tensor) -> Tensor:
        """Inference scores ``Ŵ_j · x`` ``[B, C]`` with the original normalised weights."""
        return embeddings.float() @ self.normalized_class_weights().T

"""The model a round leaves: backbone + head + classifier, and prediction with it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from labeltool.data.decode import load_image
from labeltool.models.backbones import Backbone, BackboneSpec, make_preprocess
from labeltool.models.heads import LabelerModel, LossLogits, PrototypeClassifier
from labeltool.train.checkpoints import Checkpoint

__all__ = ["assemble_model", "predict_files"]


def assemble_model(ckpt: Checkpoint, base: Backbone, embeddings: np.ndarray, labels: np.ndarray,
                   num_classes: int) -> LabelerModel:
    """Backbone (the round's fine-tuned one, if any) + head + classifier on the CPU, in eval mode.

    The classifier is the loss's own when it has one, else the prototypes (class means) of the
    labeled rows of ``embeddings`` ``[N, D]`` with ``labels`` ``[N]`` (-1 = unlabeled)."""
    if ckpt.loss.has_classifier:
        classifier: torch.nn.Module = LossLogits(ckpt.loss)
    else:
        mask = labels >= 0
        classifier = PrototypeClassifier.from_embeddings(
            torch.as_tensor(embeddings[mask]), torch.as_tensor(labels[mask]), num_classes
        )
    backbone = ckpt.load_backbone(base) if ckpt.finetuned else base
    return LabelerModel(backbone, ckpt.head, classifier).cpu().eval()


@torch.inference_mode()
def predict_files(model: LabelerModel, spec: BackboneSpec, paths: Sequence[str | Path],
                  classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Class names and probabilities ``[n, C]`` of image files under ``model``."""
    pre = make_preprocess(spec)
    x = torch.stack([pre(load_image(p)) for p in paths])
    probs = model(x).numpy()
    return [classes[i] for i in probs.argmax(1)], probs

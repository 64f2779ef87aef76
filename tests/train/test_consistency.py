"""FixMatch-style consistency training: the pseudo-label mask on hand-made logits, the masked
loss, and short fine-tuning runs with it on (any loss, decode failures, the aux classifier)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from labeltool.config import FinetuneConfig
from labeltool.losses import create_loss
from labeltool.models.backbones import Backbone, create_backbone
from labeltool.models.heads import ProjectionHead
from labeltool.train.consistency import consistency_loss, consistency_terms, pseudo_labels
from labeltool.train.finetune import FinetuneResult, finetune

from sample_helpers import SAMPLE

CLASSES = ("bag", "coat", "sandal")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pseudo_labels_keep_only_confident_rows() -> None:
    logits = torch.tensor([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 5.0, 0.0], [0.0, 2.0, 2.5]], requires_grad=True)
    pseudo, mask = pseudo_labels(logits, threshold=0.95)
    assert pseudo.tolist()[0] == 0 and pseudo.tolist()[2] == 1 and pseudo.tolist()[3] == 2
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]  # softmax max: 0.9999, 1/3, 0.987, 0.6
    assert not pseudo.requires_grad and not mask.requires_grad
    assert pseudo_labels(logits, threshold=0.5)[1].tolist() == [1.0, 0.0, 1.0, 1.0]


def test_consistency_loss_is_the_masked_mean_of_cross_entropy() -> None:
    strong = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]], requires_grad=True)
    pseudo, mask = torch.tensor([0, 2, 2]), torch.tensor([1.0, 0.0, 1.0])
    ce = nn.functional.cross_entropy(strong, pseudo, reduction="none")
    value = consistency_loss(strong, pseudo, mask)
    assert float(value.detach()) == pytest.approx(float((ce[0] + ce[2]).detach() / 3))  # masked rows count as zeros
    value.backward()
    assert strong.grad is not None and torch.all(strong.grad[1] == 0) and strong.grad[0].abs().sum() > 0
    assert float(consistency_loss(strong, pseudo, torch.zeros(3)).detach()) == 0.0


def test_consistency_terms_checks_the_views() -> None:
    aux = nn.Linear(4, 3)
    emb, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, -1, -1])
    terms = consistency_terms(aux, emb, labels, torch.randn(2, 4), threshold=0.0)
    assert terms.mask_rate == 1.0 and terms.unlabeled > 0 and terms.supervised > 0
    with pytest.raises(ValueError, match="strong views"):
        consistency_terms(aux, emb, labels, torch.randn(3, 4), threshold=0.5)
    unlabeled_only = consistency_terms(aux, emb, torch.full((5,), -1), torch.randn(5, 4), threshold=0.5)
    assert float(unlabeled_only.supervised.detach()) == 0.0 and float(unlabeled_only.unlabeled.detach()) >= 0.0


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return create_backbone("hoffer_mnist")


def _labeled() -> list[tuple[Path, int]]:
    return [(p, c) for c, name in enumerate(CLASSES) for p in sorted((SAMPLE / name).glob("*.png"))[:4]]


def _run(backbone: Backbone, loss_name: str = "cross_entropy", unlabeled: list[Path] | None = None,
         aux: nn.Linear | None = None, **settings: float) -> FinetuneResult:
    torch.manual_seed(0)
    head = ProjectionHead(128, 16, 32, 0.0)
    loss = create_loss(loss_name, num_classes=len(CLASSES), embedding_dim=16)
    cfg = FinetuneConfig(steps=4, classes_per_batch=3, samples_per_class=2, unlabeled_batch=4, seed=0,
                         device="cpu", num_workers=0, **settings)  # type: ignore[arg-type]
    unl = sorted((SAMPLE / "unlabeled").glob("*.png"))[:12] if unlabeled is None else unlabeled
    return finetune(backbone, head, loss, _labeled(), unl, cfg, aux=aux)


def test_consistency_changes_training_and_returns_the_aux_classifier(backbone: Backbone) -> None:
    off = _run(backbone)
    on = _run(backbone, consistency=1.0, consistency_threshold=0.3)
    assert off.aux is None and off.mask_rate is None and off.images == 4 * 6  # supervised loss: no unlabeled
    assert isinstance(on.aux, nn.Linear) and (on.aux.in_features, on.aux.out_features) == (16, 3)
    assert on.images == 4 * (6 + 4 + 4)  # labeled, weak and strong unlabeled views
    assert on.mask_rate is not None and 0.0 < on.mask_rate <= 1.0
    changed = [not torch.equal(a, b) for a, b in zip(off.backbone.state_dict().values(),
                                                      on.backbone.state_dict().values(), strict=True)]
    assert any(changed) and not np.allclose(off.losses, on.losses)
    assert on.optimizer_state.keys() == off.optimizer_state.keys()  # the aux classifier's Adam is kept apart

    again = _run(backbone, aux=on.aux, consistency=1.0, consistency_threshold=0.3)
    fresh = _run(backbone, consistency=1.0, consistency_threshold=0.3)
    assert torch.equal(fresh.aux.weight, on.aux.weight)  # type: ignore[union-attr]  # seeded: same run
    assert not torch.equal(again.aux.weight, on.aux.weight)  # type: ignore[union-attr]  # continued from it
    with pytest.raises(ValueError, match="aux classifier"):
        _run(backbone, aux=nn.Linear(8, 3), consistency=1.0)
    with pytest.raises(ValueError, match="unlabeled_batch"):
        FinetuneConfig(consistency=1.0, unlabeled_batch=0)


def test_consistency_with_a_semi_supervised_loss_and_a_broken_file(backbone: Backbone, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    unlabeled = [broken, *sorted((SAMPLE / "unlabeled").glob("*.png"))[:3]]
    res = _run(backbone, "association", unlabeled=unlabeled, consistency=1.0, consistency_threshold=0.01)
    assert res.images == 4 * (6 + 3 + 3)  # the broken file's two views are dropped every step
    assert res.mask_rate == 1.0 and all(np.isfinite(res.losses))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_consistency_and_holdout_under_cuda_autocast(backbone: Backbone, amp: str) -> None:
    """fp16: one gradient scaler over the model's optimizer and the aux classifier's."""
    torch.manual_seed(0)
    head = ProjectionHead(128, 16, 32, 0.0)
    loss = create_loss("arcgrad", num_classes=len(CLASSES), embedding_dim=16)
    cfg = FinetuneConfig(steps=6, classes_per_batch=3, samples_per_class=2, unlabeled_batch=8, consistency=1.0,
                         consistency_threshold=0.3, holdout=0.25, eval_every=2, amp=amp, device="cuda", num_workers=2)
    res = finetune(backbone, head, loss, _labeled(), sorted((SAMPLE / "unlabeled").glob("*.png"))[:16], cfg)
    assert res.amp == amp and all(np.isfinite(res.losses)) and res.mask_rate is not None
    assert res.holdout_accuracy is not None and res.aux is not None and torch.isfinite(res.aux.weight).all()

"""Fine-tune mode: train the backbone's last stages, the projection head and the loss end to end
on images.

Each step draws a class-balanced labeled batch (P classes x K images, augmented) and, for losses
that use unlabeled data, an unlabeled image batch beside it (label ``-1``). On CUDA the forward
pass runs under bf16 autocast (fp16 with a gradient scaler where bf16 is missing) in
channels_last; the losses compute their unstable parts (arccos, logs of softmax products) in
float32 themselves. Images are read only through :func:`labeltool.data.scan.load_image`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2 as T

from labeltool.config import FinetuneConfig
from labeltool.data.scan import ImageDecodeError, load_image
from labeltool.losses import EmbeddingLoss
from labeltool.models.backbones import Backbone, BackboneSpec, make_preprocess
from labeltool.models.extract import pick_device
from labeltool.models.heads import ProjectionHead
from labeltool.models.stages import backbone_stages, set_train_mode, unfreeze_last_stages
from labeltool.train.head import StepProgress
from labeltool.train.optim_state import adam_moments, named_trainables, restore_adam_moments
from labeltool.train.sampling import BalancedSampler, CyclingSampler

__all__ = [
    "FinetuneResult", "backbone_stages", "finetune", "set_train_mode", "unfreeze_last_stages",
]

@dataclass
class FinetuneResult:
    """The fine-tuned modules (CPU, eval mode) and what the run did."""

    backbone: Backbone
    head: ProjectionHead
    loss: EmbeddingLoss
    losses: list[float]
    steps: int
    seconds: float
    device: str
    amp: str
    images: int  # images pushed through the backbone in training steps
    images_per_second: float
    trainable: list[str]  # names of the backbone parameters that were trained
    trainable_params: int  # how many backbone weights were trained
    peak_memory_mb: float | None  # peak CUDA memory allocated during the run
    optimizer_state: dict[str, Tensor] = field(default_factory=dict)  # Adam moments, to continue from


# ---------------------------------------------------------------------------- data
def train_transform(spec: BackboneSpec, crop_scale: tuple[float, float] = (0.6, 1.0)) -> T.Compose:
    """PIL image → augmented normalised ``[3, S, S]``: random resized crop, flip, mild colour jitter."""
    return T.Compose([
        T.PILToTensor(),
        T.RandomResizedCrop(spec.input_size, scale=crop_scale, interpolation=T.InterpolationMode.BICUBIC,
                            antialias=True),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(spec.mean), std=list(spec.std)),
    ])


class ImageLabelDataset(Dataset[tuple[Tensor, int, bool]]):
    """``(image [3, S, S], label, ok)``; a file that fails to decode gives zeros and ``ok=False``."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Any, size: int) -> None:
        self.paths, self.labels = list(paths), [int(v) for v in labels]
        self.transform, self.size = transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int, bool]:
        try:
            img: Image.Image = load_image(self.paths[i])
            return self.transform(img), self.labels[i], True
        except (ImageDecodeError, OSError, ValueError):
            return torch.zeros(3, self.size, self.size), self.labels[i], False


def _collate(items: list[tuple[Tensor, int, bool]]) -> tuple[Tensor, Tensor, Tensor]:
    x = torch.stack([t for t, _, _ in items])
    return x, torch.tensor([y for _, y, _ in items], dtype=torch.int64), torch.tensor([ok for _, _, ok in items])


class StepBatches(Sampler[list[int]]):
    """``steps`` batches of dataset indices: P x K labeled (rows ``< n_labeled``) then up to
    ``unlabeled_batch`` unlabeled ones (rows ``>= n_labeled``), drawn from a seeded generator."""

    def __init__(self, labels: np.ndarray, n_unlabeled: int, config: FinetuneConfig, steps: int,
                 rng: np.random.Generator) -> None:
        self.balanced = BalancedSampler(labels, config.classes_per_batch, config.samples_per_class, rng)
        self.n_labeled, self.n_unlabeled = len(labels), n_unlabeled
        self.unlabeled = CyclingSampler(np.arange(n_unlabeled), config.unlabeled_batch, rng)
        self.u = self.unlabeled.size
        self.steps, self.rng = steps, rng

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            batch = self.balanced().tolist()
            if self.u:
                batch += (self.n_labeled + np.sort(self.unlabeled())).tolist()
            yield batch


# ---------------------------------------------------------------------------- training
def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device``: ``auto`` → bf16 on CUDA when supported, else
    fp16; off on CPU. ``fp16`` on a CPU raises (no gradient scaling there)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs a CUDA device; use amp='bf16' or 'off' on a CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _param_groups(params: list[nn.Parameter], lr: float, wd: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and kernels only, not on biases and norm scales."""
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    return [g for g in ({"params": decay, "lr": lr, "weight_decay": wd},
                        {"params": rest, "lr": lr, "weight_decay": 0.0}) if g["params"]]


def _amp_name(amp: torch.dtype | None) -> str:
    return "off" if amp is None else ("bf16" if amp == torch.bfloat16 else "fp16")


def _workers(config: FinetuneConfig, device: torch.device) -> int:
    if config.num_workers is not None:
        return config.num_workers
    return min(8, max(1, (os.cpu_count() or 2) - 1)) if device.type == "cuda" else 0


def finetune(
    backbone: Backbone,
    head: ProjectionHead,
    loss: EmbeddingLoss,
    labeled: Sequence[tuple[Path, int]],
    unlabeled: Sequence[Path],
    config: FinetuneConfig,
    progress: StepProgress | None = None,
    optimizer_state: Mapping[str, Tensor] | None = None,
) -> FinetuneResult:
    """Fine-tune copies of ``backbone`` (last ``config.stages`` stages), ``head`` and ``loss`` on
    images: ``labeled`` ``(path, class)`` pairs and ``unlabeled`` paths (read only by losses
    with ``uses_unlabeled``). The inputs are left untouched; the result holds the trained copies.
    ``optimizer_state`` (the previous run's ``FinetuneResult.optimizer_state``, same modules and
    stages) resumes Adam where that run stopped (see :mod:`labeltool.train.optim_state`).

    Shapes: images ``[B, 3, S, S]`` → backbone ``[B, F]`` → head ``[B, D]`` → loss (scalar).
    """
    labels = _checked_labels(backbone, head, loss, labeled)
    device = pick_device(config.device)
    amp = resolve_amp(config.amp, device)
    seed = 0 if config.seed is None else int(config.seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    backbone, head, loss = copy.deepcopy(backbone), copy.deepcopy(head), copy.deepcopy(loss)
    trainable = unfreeze_last_stages(backbone, config.stages)
    unl = list(unlabeled) if loss.uses_unlabeled and config.unlabeled_batch > 0 else []
    p = min(config.classes_per_batch, len(np.unique(labels)))
    steps = int(config.steps or config.epochs * max(1, math.ceil(len(labels) / (p * config.samples_per_class))))
    loader = _loader(backbone.spec, [q for q, _ in labeled], labels, unl, config, steps, rng, seed, device)
    run = _start_run(backbone, head, loss, config, amp, device, optimizer_state)
    t0 = time.perf_counter()
    history, images = run.train(loader, steps, progress)
    if run.cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if run.cuda else None
    backbone = backbone.to(memory_format=torch.contiguous_format).cpu().eval().requires_grad_(False)
    return FinetuneResult(
        backbone=backbone, head=head.cpu().eval(), loss=loss.cpu().eval(), losses=history, steps=steps,
        seconds=seconds, device=str(device), amp=_amp_name(amp),
        images=images, images_per_second=images / seconds if seconds > 0 else 0.0, trainable=trainable,
        trainable_params=sum(q.numel() for q in run.backbone_params),
        peak_memory_mb=peak, optimizer_state=adam_moments(run.opt, run.named),
    )


def _checked_labels(backbone: Backbone, head: ProjectionHead, loss: EmbeddingLoss,
                    labeled: Sequence[tuple[Path, int]]) -> np.ndarray:
    """The classes ``[L]`` of ``labeled``, checked against the loss and the head's input size."""
    labels = np.array([int(y) for _, y in labeled], dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError("fine-tuning needs labeled images of at least 2 classes")
    if labels.min() < 0 or labels.max() >= loss.num_classes:
        raise ValueError(f"labels must lie in [0, {loss.num_classes}) for this loss")
    if backbone.spec.feature_dim and head.in_dim != backbone.spec.feature_dim:
        raise ValueError(f"head takes {head.in_dim}-d features, the backbone gives {backbone.spec.feature_dim}")
    return labels


def _loader(spec: BackboneSpec, paths: Sequence[Path], labels: np.ndarray, unlabeled: Sequence[Path],
            config: FinetuneConfig, steps: int, rng: np.random.Generator, seed: int,
            device: torch.device) -> DataLoader[tuple[Tensor, int, bool]]:
    """``steps`` batches ``(images [B, 3, S, S], labels [B], ok [B])``: labeled ``paths`` with
    ``labels`` (augmented when ``config.augment``), then ``unlabeled`` ones labeled -1."""
    tf = train_transform(spec, config.crop_scale) if config.augment else make_preprocess(spec)
    dataset = ImageLabelDataset(list(paths) + list(unlabeled), list(labels) + [-1] * len(unlabeled), tf,
                                spec.input_size)
    batches = StepBatches(labels, len(unlabeled), config, steps, rng)
    workers = _workers(config, device)
    return DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed), persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def _start_run(backbone: Backbone, head: ProjectionHead, loss: EmbeddingLoss, config: FinetuneConfig,
               amp: torch.dtype | None, device: torch.device,
               optimizer_state: Mapping[str, Tensor] | None) -> _Run:
    """Move the modules to ``device`` (channels_last on CUDA) and build their optimizer, resuming
    ``optimizer_state`` when it matches."""
    cuda = device.type == "cuda"
    backbone.to(device)
    if cuda:
        backbone.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)
    head.to(device)
    loss.to(device)
    bb_params = [q for q in backbone.parameters() if q.requires_grad]
    hl_params = list(head.parameters()) + list(loss.parameters())
    opt = torch.optim.AdamW(
        _param_groups(bb_params, config.backbone_lr, config.weight_decay)
        + _param_groups(hl_params, config.head_lr, config.weight_decay)
    )
    named = named_trainables(("backbone", backbone), ("head", head), ("loss", loss))
    if optimizer_state and not restore_adam_moments(opt, named, optimizer_state):
        warnings.warn("the saved optimizer state does not match the trained modules (other stages?); "
                      "fine-tuning with a fresh optimizer", stacklevel=3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    return _Run(backbone, head, loss, opt, scaler, named, bb_params, hl_params, device, amp, config.max_grad_norm)


@dataclass
class _Run:
    """The modules of one fine-tuning run on their device, with their optimizer and AMP settings."""

    backbone: Backbone
    head: ProjectionHead
    loss: EmbeddingLoss
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    named: list[tuple[str, nn.Parameter]]
    backbone_params: list[nn.Parameter]  # the trained ones
    head_loss_params: list[nn.Parameter]
    device: torch.device
    amp: torch.dtype | None
    max_grad_norm: float | None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def train(self, loader: DataLoader[tuple[Tensor, int, bool]], steps: int,
              progress: StepProgress | None) -> tuple[list[float], int]:
        """One step per batch of ``loader``; ``(per-step losses, images trained on)``."""
        set_train_mode(self.backbone)
        self.head.train()
        self.loss.train()
        history: list[float] = []
        images = 0
        for step, (x, y, ok) in enumerate(loader):
            history.append(self.step(x, y, ok, step))
            images += int(ok.sum())
            if progress and (step % 10 == 0 or step == steps - 1):
                progress(step + 1, steps, history[-1])
        return history, images

    def step(self, x: Tensor, y: Tensor, ok: Tensor, step: int) -> float:
        """One optimiser step on images ``[B, 3, S, S]`` and labels ``[B]`` (rows with ``ok``
        ``[B]`` False failed to decode and are left out); the step's loss."""
        if not bool(ok.all()):
            x, y = x[ok], y[ok]
        x = x.to(self.device, non_blocking=True)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(self.device, non_blocking=True)
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()
        with ctx:
            value = self.loss(self.head(self.backbone(x)), y)
        if not torch.isfinite(value):
            raise FloatingPointError(
                f"loss {self.loss.name} became {value.item()} at fine-tune step {step}; lower the learning rates"
            )
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(value).backward()
        if self.max_grad_norm is not None:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.backbone_params + self.head_loss_params, self.max_grad_norm)
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(value.detach())


def backbone_state(backbone: nn.Module) -> dict[str, Tensor]:
    """The whole backbone state (parameters and buffers) as contiguous CPU tensors, for saving."""
    return {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}

"""Fine-tune mode: train the backbone's last stages, the projection head and the loss end to end
on images.

Each step draws a class-balanced labeled batch (P classes x K images, weakly augmented, see
:mod:`labeltool.models.augment`) and, for losses that use unlabeled data or with consistency
training on, an unlabeled image batch beside it (label ``-1``; :mod:`labeltool.train.finetune_data`).
The backbone's defaults come from :meth:`FinetuneConfig.for_backbone` (a from-scratch network
trains every stage). With ``holdout`` a stratified share of the labeled images is set aside to
stop early on and keep the best state (:mod:`labeltool.train.holdout`); with ``consistency``
an auxiliary classifier adds a FixMatch term (:mod:`labeltool.train.consistency`).

On CUDA the forward pass runs under bf16 autocast (fp16 with a gradient scaler where bf16 is
missing) in channels_last; the losses compute their unstable parts (arccos, logs of softmax
products) in float32 themselves.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from labeltool.config import FinetuneConfig
from labeltool.losses import EmbeddingLoss
from labeltool.models.backbones import Backbone
from labeltool.models.extract import pick_device
from labeltool.models.heads import ProjectionHead
from labeltool.models.stages import backbone_stages, set_train_mode, unfreeze_last_stages
from labeltool.train.consistency import aux_classifier, consistency_terms
from labeltool.train.head import StepProgress
from labeltool.train.holdout import BestState, HoldoutEval, holdout_split
from labeltool.train.optim_state import adam_moments, named_trainables, restore_adam_moments

if TYPE_CHECKING:
    from labeltool.train.finetune_data import Batch

__all__ = [
    "FinetuneResult", "backbone_stages", "finetune", "set_train_mode", "unfreeze_last_stages",
]


@dataclass
class FinetuneResult:
    """The fine-tuned modules (CPU, eval mode) and what the run did.

    ``seconds`` is the whole run; ``images_per_second`` counts training time only (without
    ``eval_seconds``, the held-out evaluations); ``data_seconds`` is the time the training loop
    waited for its next batch. With ``holdout``, the modules are those of ``best_step`` and
    ``holdout_accuracy`` is their held-out 1-NN accuracy (the best of ``eval_history``, a list of
    ``(step, accuracy)``); the Adam moments are those of the last step run.
    """

    backbone: Backbone
    head: ProjectionHead
    loss: EmbeddingLoss
    losses: list[float]
    steps: int  # steps run (fewer than planned when stopped early)
    seconds: float
    device: str
    amp: str
    images: int  # images pushed through the backbone in training steps (strong views included)
    images_per_second: float
    trainable: list[str]  # names of the backbone parameters that were trained
    trainable_params: int  # how many backbone weights were trained
    peak_memory_mb: float | None  # peak CUDA memory allocated during the run
    optimizer_state: dict[str, Tensor] = field(default_factory=dict)  # Adam moments, to continue from
    config: FinetuneConfig | None = None  # the settings used (with the backbone's defaults)
    holdout_accuracy: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    eval_seconds: float = 0.0
    data_seconds: float = 0.0
    mask_rate: float | None = None  # mean share of unlabeled images above the consistency threshold
    aux: nn.Linear | None = None  # the consistency classifier ``[B, D] -> [B, C]``, to continue from


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


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """The learning-rate multiplier of ``schedule`` at ``step`` (0-based) of a ``steps``-step run:
    1 throughout for ``"constant"``; ``"cosine"`` falls from 1 at step 0 along half a cosine and
    would reach 0 one step after the last (so the last step still learns a little)."""
    if schedule == "constant" or steps <= 1:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


def _amp_name(amp: torch.dtype | None) -> str:
    return "off" if amp is None else ("bf16" if amp == torch.bfloat16 else "fp16")


def finetune(
    backbone: Backbone,
    head: ProjectionHead,
    loss: EmbeddingLoss,
    labeled: Sequence[tuple[Path, int]],
    unlabeled: Sequence[Path],
    config: FinetuneConfig,
    progress: StepProgress | None = None,
    optimizer_state: Mapping[str, Tensor] | None = None,
    aux: nn.Linear | None = None,
) -> FinetuneResult:
    """Fine-tune copies of ``backbone`` (last ``config.stages`` stages), ``head`` and ``loss`` on
    images: ``labeled`` ``(path, class)`` pairs and ``unlabeled`` paths (read by losses with
    ``uses_unlabeled`` and by consistency training). The inputs are left untouched; the result
    holds the trained copies. ``optimizer_state`` (the previous run's
    ``FinetuneResult.optimizer_state``, same modules and stages) resumes Adam where that run
    stopped (see :mod:`labeltool.train.optim_state`); ``aux`` (a previous ``FinetuneResult.aux``)
    continues the consistency classifier.

    Shapes: images ``[B, 3, S, S]`` → backbone ``[B, F]`` → head ``[B, D]`` → loss (scalar).
    """
    labels = _checked_labels(backbone, head, loss, labeled)
    config = config.for_backbone(backbone.spec)
    device = pick_device(config.device)
    amp = resolve_amp(config.amp, device)
    seed = 0 if config.seed is None else int(config.seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    backbone, head, loss = copy.deepcopy(backbone), copy.deepcopy(head), copy.deepcopy(loss)
    trainable = unfreeze_last_stages(backbone, config.stages)
    paths = [q for q, _ in labeled]
    train_idx, held_idx = holdout_split(labels, config.holdout, rng)
    t_decode = time.perf_counter()
    holdout = HoldoutEval(backbone.spec, paths, labels, train_idx, held_idx) if len(held_idx) else None
    decode_seconds = time.perf_counter() - t_decode if holdout is not None else 0.0
    wants_unlabeled = loss.uses_unlabeled or config.consistency > 0
    unl = list(unlabeled) if wants_unlabeled and config.unlabeled_batch > 0 else []
    train_labels = labels[train_idx]
    p = min(config.classes_per_batch, len(np.unique(train_labels)))
    batches_per_epoch = max(1, math.ceil(len(train_labels) / (p * config.samples_per_class)))
    steps = int(config.steps or min(config.epochs * batches_per_epoch, config.max_steps or math.inf))
    # torchvision's import costs seconds: only when training
    from labeltool.train.finetune_data import make_loader

    loader = make_loader(backbone.spec, [paths[i] for i in train_idx], train_labels, unl, config, steps, rng,
                         seed, device)
    run = _start_run(backbone, head, loss, _aux_for(aux, head, loss, config), config, amp, device, optimizer_state)
    t0 = time.perf_counter()
    done = run.train(loader, steps, progress, holdout if holdout is not None and holdout.active else None)
    if run.cuda:
        torch.cuda.synchronize(device)
    done.eval_seconds += decode_seconds  # decoding the held-out and reference images once
    return _result(run, done, config, trainable, time.perf_counter() - t0 + decode_seconds)


def _aux_for(aux: nn.Linear | None, head: ProjectionHead, loss: EmbeddingLoss,
             config: FinetuneConfig) -> nn.Linear | None:
    """The consistency classifier to train: a copy of ``aux`` (checked), a fresh one, or None."""
    if config.consistency <= 0:
        return None
    if aux is None:
        return aux_classifier(head.out_dim, loss.num_classes)
    if (aux.in_features, aux.out_features) != (head.out_dim, loss.num_classes):
        raise ValueError(f"aux classifier maps {aux.in_features} → {aux.out_features}; "
                         f"the head gives {head.out_dim}-d embeddings of {loss.num_classes} classes")
    return copy.deepcopy(aux).requires_grad_(True)


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


def _result(run: _Run, done: _Trained, config: FinetuneConfig, trainable: list[str],
            seconds: float) -> FinetuneResult:
    """Restore the best held-out state (if any), move the modules to the CPU and report."""
    best = done.best
    if best is not None:
        best.restore(run.modules)
    peak = torch.cuda.max_memory_allocated(run.device) / 2**20 if run.cuda else None
    train_seconds = seconds - done.eval_seconds
    backbone = run.backbone.to(memory_format=torch.contiguous_format).cpu().eval().requires_grad_(False)
    return FinetuneResult(
        backbone=backbone, head=run.head.cpu().eval(), loss=run.loss.cpu().eval(), losses=done.losses,
        steps=len(done.losses), seconds=seconds, device=str(run.device), amp=_amp_name(run.amp),
        images=done.images, images_per_second=done.images / train_seconds if train_seconds > 0 else 0.0,
        trainable=trainable, trainable_params=sum(q.numel() for q in run.backbone_params), peak_memory_mb=peak,
        optimizer_state=adam_moments(run.opt, run.named), config=config,
        holdout_accuracy=None if best is None else best.best, best_step=None if best is None else best.best_step,
        stopped_early=done.stopped_early, eval_history=[] if best is None else list(best.history),
        eval_seconds=done.eval_seconds, data_seconds=done.data_seconds,
        mask_rate=float(np.mean(done.mask_rates)) if done.mask_rates else None,
        aux=None if run.aux is None else run.aux.cpu().eval(),
    )


def _start_run(backbone: Backbone, head: ProjectionHead, loss: EmbeddingLoss, aux: nn.Linear | None,
               config: FinetuneConfig, amp: torch.dtype | None, device: torch.device,
               optimizer_state: Mapping[str, Tensor] | None) -> _Run:
    """Move the modules to ``device`` (channels_last on CUDA) and build their optimizer, resuming
    ``optimizer_state`` when it matches. ``aux`` gets an optimizer of its own (always fresh), so
    the saved moments keep covering exactly the backbone, head and loss."""
    cuda = device.type == "cuda"
    backbone.to(device)
    if cuda:
        backbone.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)
    for module in (head, loss, aux):
        if module is not None:
            module.to(device)
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
    aux_opt = None if aux is None else torch.optim.AdamW(
        _param_groups(list(aux.parameters()), config.head_lr, config.weight_decay))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    return _Run(backbone, head, loss, opt, scaler, named, bb_params, hl_params, device, amp, config,
                aux, aux_opt)


@dataclass
class _Trained:
    """What :meth:`_Run.train` did: per-step losses, images, timings, held-out record."""

    losses: list[float] = field(default_factory=list)
    images: int = 0
    mask_rates: list[float] = field(default_factory=list)
    eval_seconds: float = 0.0
    data_seconds: float = 0.0
    stopped_early: bool = False
    best: BestState | None = None


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
    config: FinetuneConfig
    aux: nn.Linear | None = None
    aux_opt: torch.optim.Optimizer | None = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def modules(self) -> list[nn.Module]:
        """The trained modules whose state early stopping keeps."""
        return [self.backbone, self.head, self.loss] + ([self.aux] if self.aux is not None else [])

    def train_mode(self) -> None:
        set_train_mode(self.backbone)
        self.head.train()
        self.loss.train()

    def train(self, loader: DataLoader[Batch], steps: int, progress: StepProgress | None,
              holdout: HoldoutEval | None) -> _Trained:
        """One step per batch of ``loader``, scored on ``holdout`` every ``eval_every`` steps and
        at the last one, stopping after ``patience`` scores without improvement."""
        done = _Trained(best=BestState(self.config.patience) if holdout is not None else None)
        self.train_mode()
        opts = [self.opt] + ([self.aux_opt] if self.aux_opt is not None else [])
        base_lrs = [[g["lr"] for g in opt.param_groups] for opt in opts]
        waited = time.perf_counter()
        for step, batch in enumerate(loader):
            done.data_seconds += time.perf_counter() - waited
            factor = lr_factor(self.config.lr_schedule, step, steps)
            for opt, lrs in zip(opts, base_lrs, strict=True):
                for group, lr in zip(opt.param_groups, lrs, strict=True):
                    group["lr"] = lr * factor
            value, images, mask_rate = self.step(batch, step)
            done.losses.append(value)
            done.images += images
            if mask_rate is not None:
                done.mask_rates.append(mask_rate)
            if progress and (step % 10 == 0 or step == steps - 1):
                progress(step + 1, steps, value)
            if holdout is not None and done.best is not None and ((step + 1) % self.config.eval_every == 0
                                                                   or step == steps - 1):
                t = time.perf_counter()
                stop = done.best.update(step + 1, holdout.accuracy(nn.Sequential(self.backbone, self.head),
                                                                   self.device, self.amp), self.modules)
                self.train_mode()
                done.eval_seconds += time.perf_counter() - t
                if stop and step < steps - 1:
                    done.stopped_early = True
                    break
            waited = time.perf_counter()
        return done

    def step(self, batch: Batch, step: int) -> tuple[float, int, float | None]:
        """One optimiser step on a :class:`Batch` (rows that failed to decode are left out, both
        views); ``(the step's loss, images trained on, mask rate or None)``."""
        x, y, ok, strong = batch
        if strong.shape[0]:
            strong = strong[ok[y < 0]]
        if not bool(ok.all()):
            x, y = x[ok], y[ok]
        n = x.shape[0]
        if strong.shape[0]:
            x = torch.cat([x, strong])  # one forward pass: BatchNorm sees both views together
        x = x.to(self.device, non_blocking=True)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(self.device, non_blocking=True)
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()
        mask_rate = None
        with ctx:
            emb = self.head(self.backbone(x))
            value = self.loss(emb[:n], y)
            if self.aux is not None:
                terms = consistency_terms(self.aux, emb[:n], y, emb[n:], self.config.consistency_threshold)
                value = value + terms.supervised + self.config.consistency * terms.unlabeled
                mask_rate = terms.mask_rate if bool((y < 0).any()) else None
        if not torch.isfinite(value):
            raise FloatingPointError(
                f"loss {self.loss.name} became {value.item()} at fine-tune step {step}; lower the learning rates"
            )
        self._optimise(value)
        return float(value.detach()), int(x.shape[0]), mask_rate

    def _optimise(self, value: Tensor) -> None:
        """Backward pass, gradient clipping and the optimizer step(s), through the AMP scaler."""
        opts = [self.opt] + ([self.aux_opt] if self.aux_opt is not None else [])
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(value).backward()
        if self.config.max_grad_norm is not None:
            params = self.backbone_params + self.head_loss_params
            for opt in opts:
                self.scaler.unscale_(opt)
            if self.aux is not None:
                params = params + list(self.aux.parameters())
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        for opt in opts:
            self.scaler.step(opt)
        self.scaler.update()


def backbone_state(backbone: nn.Module) -> dict[str, Tensor]:
    """The whole backbone state (parameters and buffers) as contiguous CPU tensors, for saving."""
    return {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}

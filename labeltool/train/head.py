"""Head-mode trainer: a projection head (and the loss's own parameters) on cached features.

``TrainConfig.mode`` picks the round type: ``head`` (this module) or ``finetune``
(:mod:`labeltool.train.finetune`, settings in ``TrainConfig.finetune``).

Each step draws a class-balanced labeled batch (P classes x K images) and, for losses that use
unlabeled data, an unlabeled batch beside it. Runs on CUDA when present. Deterministic for a
given seed on a given device.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from labeltool.config import TrainConfig
from labeltool.losses import EmbeddingLoss, create_loss
from labeltool.models.extract import pick_device
from labeltool.models.heads import EMBED_CHUNK, ProjectionHead, pool_pass, released_reads, resolve_precision
from labeltool.train.optim_state import adam_moments, named_trainables, restore_adam_moments
from labeltool.train.sampling import BalancedSampler, CyclingSampler

StepProgress = Callable[[int, int, float], None]  # (step, total_steps, loss)
RESIDENT_UNLABELED_BYTES = 1 << 30  # unlabeled rows kept on the device when they fit (float16)


def dimension_warning(embedding_dim: int, num_classes: int) -> str | None:
    """The W-Softmax bound: fewer than C-1 dimensions cannot hold C equiangular class vectors."""
    if num_classes >= 2 and embedding_dim < num_classes - 1:
        return (
            f"embedding dimension {embedding_dim} is below C-1 = {num_classes - 1} for {num_classes} classes; "
            "classes cannot all be equally separated (use at least C-1)"
        )
    return None


@dataclass
class TrainResult:
    """A trained head with its loss module and what happened during training."""

    head: ProjectionHead
    loss: EmbeddingLoss
    losses: list[float]
    steps: int
    seconds: float
    device: str
    optimizer_state: dict[str, Tensor] = field(default_factory=dict)  # Adam moments, to continue from
    precision: str = "float32"  # of the head's products while training (resolved TrainConfig.precision)


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: TrainConfig,
    *,
    init: tuple[ProjectionHead, EmbeddingLoss] | None = None,
    optimizer_state: Mapping[str, Tensor] | None = None,
    progress: StepProgress | None = None,
    resident_bytes: int = RESIDENT_UNLABELED_BYTES,
) -> TrainResult:
    """Train a projection head on ``features`` ``[N, F]`` (float, may be a memmap) with ``labels``
    ``[N]`` (class index or -1). ``init`` continues from an earlier round's head and loss, and
    ``optimizer_state`` (that round's ``TrainResult.optimizer_state``) from its Adam moments:
    without them a continued round restarts Adam, whose first steps are full-size whatever the
    gradient (see :mod:`labeltool.train.optim_state`).

    Every step's batch is drawn before the first step (:meth:`HeadBatches.plan`), so losses
    that use unlabeled images read only the rows the run will draw (at most ``steps x
    unlabeled_batch``, whatever the pool size): copied once to the device as float16 when they
    take at most ``resident_bytes``, else gathered batch by batch.
    """
    labels = np.asarray(labels, dtype=np.int64)
    features = released_reads(features)  # the rows read leave no memory-mapped pages behind
    labeled = _labeled_rows(features, labels, num_classes)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    head, loss, continued = _start_modules(features.shape[1], num_classes, config, init)
    head, loss = head.to(device), loss.to(device)
    named = named_trainables(("head", head), ("loss", loss))
    opt = make_optimizer([p for _, p in named], config.lr, config.weight_decay)
    if continued and optimizer_state and not restore_adam_moments(opt, named, optimizer_state):
        warnings.warn("the saved optimizer state does not match the head; continuing with a fresh optimizer",
                      stacklevel=2)
    batches = HeadBatches(features, labels, labeled, loss.uses_unlabeled, config, rng, device)
    steps = step_count(len(labeled), batches.sampler.batch_size, config, continued=continued)
    t0 = time.perf_counter()
    plan = batches.plan(steps, resident_bytes)
    precision = resolve_precision(config.precision, device)
    history = _run_steps(head, loss, opt, batches, plan, progress, config.loss, bf16=precision == "bfloat16")
    moments = adam_moments(opt, named)
    return TrainResult(head.cpu(), loss.cpu(), history, steps, time.perf_counter() - t0, str(device), moments,
                       precision)


def _labeled_rows(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Indices of the labeled rows of ``labels`` ``[N]``, after checking them against ``features`` ``[N, F]``."""
    if features.ndim != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features [N, F] and labels [N] disagree: {features.shape} vs {labels.shape}")
    labeled = np.flatnonzero(labels >= 0)
    if len(np.unique(labels[labeled])) < 2:
        raise ValueError("training needs labeled images of at least 2 classes")
    if labels.max() >= num_classes:
        raise ValueError(f"label {labels.max()} out of range for {num_classes} classes")
    return labeled


def _start_modules(
    in_dim: int, num_classes: int, config: TrainConfig, init: tuple[ProjectionHead, EmbeddingLoss] | None,
) -> tuple[ProjectionHead, EmbeddingLoss, bool]:
    """``(head, loss, continued)``: ``init`` when it fits these features, classes and loss, else fresh ones."""
    dim = config.resolved_dim(num_classes)
    if (msg := dimension_warning(dim, num_classes)) is not None:
        warnings.warn(msg, stacklevel=3)
    if init is not None:
        head, loss = init
        if head.in_dim == in_dim and loss.num_classes == num_classes and loss.name == config.loss:
            return head, loss, True
    head, loss = _fresh(in_dim, dim, num_classes, config)
    return head, loss, False


def step_count(n_labeled: int, batch_size: int, config: TrainConfig, *, continued: bool = False) -> int:
    """Training steps: ``epochs`` passes over the labeled rows, within ``[min_steps, max_steps]``;
    at most ``continued_steps`` when the head continues an earlier round's."""
    per_epoch = max(1, math.ceil(n_labeled / batch_size))
    steps = min(max(config.epochs * per_epoch, config.min_steps), config.max_steps)
    return int(min(steps, config.continued_steps) if continued else steps)


def _run_steps(head: ProjectionHead, loss: EmbeddingLoss, opt: torch.optim.Optimizer, batches: HeadBatches,
               plan: StepPlan, progress: StepProgress | None, loss_name: str, *, bf16: bool = False) -> list[float]:
    """Run the planned optimiser steps (train mode, back in eval mode after); the per-step losses.
    ``bf16``: the head's forward (and so its backward) under bfloat16 autocast; its embeddings
    ``[B, D]`` go to the loss in float32."""
    head.train()
    loss.train()
    steps = len(plan.labeled)
    trace = torch.zeros(steps, device=batches.device)  # per-step loss, read back in blocks (no sync per step)
    history: list[float] = []
    every = 10 if progress else 50
    for start in range(0, steps, every):
        block = plan.on_device(start, min(every, steps - start), batches.device)
        for step, (ix, iu) in enumerate(block, start):
            x, y = batches.gather(ix, iu)
            with torch.autocast(batches.device.type, dtype=torch.bfloat16, enabled=bf16):
                emb = head(x)
            value = loss(emb.float(), y)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            trace[step] = value.detach()
        _read_back(trace[: start + len(block)], history, loss_name)
        if progress:
            progress(start + len(block), steps, history[-1])
    head.eval()
    loss.eval()
    return history


def make_optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where the device supports it (one kernel for all parameters: about 4x
    faster than the per-parameter loop on a CPU, and no per-parameter launches on CUDA)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@dataclass
class StepPlan:
    """Every step's indices, drawn before the first step: ``labeled[t]`` into the labeled rows,
    ``unlabeled[t]`` into :class:`UnlabeledRows` (an empty list when the loss uses none)."""

    labeled: list[np.ndarray]
    unlabeled: list[np.ndarray]
    unlabeled_on_device: bool = False  # unlabeled indices address a resident copy on the device

    def on_device(self, start: int, n: int, device: torch.device) -> list[tuple[Tensor, Tensor | np.ndarray | None]]:
        """Steps ``start:start + n`` as ``(labeled, unlabeled)`` index pairs, moved to the device in
        one copy per block (a copy per step would wait for the device every step); unlabeled
        indices stay on the host when their rows are gathered there anyway."""
        lab = self.labeled[start : start + n]
        lab_dev = torch.as_tensor(np.concatenate(lab), device=device).split([len(a) for a in lab])
        if not self.unlabeled:
            return [(ix, None) for ix in lab_dev]
        unl = self.unlabeled[start : start + n]
        if not self.unlabeled_on_device:
            return list(zip(lab_dev, unl, strict=True))
        unl_dev = torch.as_tensor(np.concatenate(unl), device=device).split([len(u) for u in unl])
        return list(zip(lab_dev, unl_dev, strict=True))


class UnlabeledRows:
    """The unlabeled rows a run draws (``draws``: pool rows per step): read once, in file order,
    into a float16 copy on ``device`` when they take at most ``resident_bytes``, else gathered
    from ``features`` batch by batch. :attr:`steps` are the draws as indices for :meth:`rows`."""

    def __init__(self, features: Any, draws: list[np.ndarray], device: torch.device, resident_bytes: int) -> None:
        self.features, self.device = features, device
        needed = np.unique(np.concatenate(draws)) if draws else np.zeros(0, dtype=np.int64)
        self.resident: Tensor | None = None
        if needed.size and needed.size * features.shape[1] * 2 <= resident_bytes:
            self.resident = torch.as_tensor(np.asarray(features[needed], dtype=np.float16), device=device)
            self.steps = [np.searchsorted(needed, d) for d in draws]
        else:
            self.steps = [np.sort(d) for d in draws]  # sorted: memmap locality

    def rows(self, ix: Tensor | np.ndarray) -> Tensor:
        """Float32 rows ``[U, F]`` on the device for one step's indices from :attr:`steps`."""
        if self.resident is not None:
            return self.resident[ix].float()
        return torch.as_tensor(np.asarray(self.features[np.asarray(ix)], dtype=np.float32), device=self.device)


class HeadBatches:
    """The rows a head trains on: labeled features ``[L, F]`` and labels ``[L]`` on ``device``, a
    class-balanced :class:`BalancedSampler` over them and, with ``with_unlabeled``, a
    :class:`CyclingSampler` over the unlabeled pool; :meth:`plan` draws a run's batches."""

    def __init__(self, features: Any, labels: np.ndarray, labeled: np.ndarray, with_unlabeled: bool,
                 config: TrainConfig, rng: np.random.Generator, device: torch.device) -> None:
        self.features, self.device = features, device
        self.x_lab = torch.as_tensor(np.asarray(features[labeled], dtype=np.float32), device=device)
        self.y_lab = torch.as_tensor(labels[labeled], device=device)
        self.sampler = BalancedSampler(labels[labeled], config.classes_per_batch, config.samples_per_class, rng)
        unlabeled = np.flatnonzero(labels < 0) if with_unlabeled else np.zeros(0, dtype=np.int64)
        self.cycle = CyclingSampler(unlabeled, config.unlabeled_batch, rng) if len(unlabeled) else None
        self.unlabeled: UnlabeledRows | None = None

    def plan(self, steps: int, resident_bytes: int = RESIDENT_UNLABELED_BYTES) -> StepPlan:
        """Draw ``steps`` batches in step order (each step's labeled batch, then its unlabeled one)
        and read the unlabeled rows they use (:class:`UnlabeledRows`)."""
        lab: list[np.ndarray] = []
        unl: list[np.ndarray] = []
        for _ in range(steps):
            lab.append(self.sampler())
            if self.cycle is not None:
                unl.append(self.cycle())
        if self.cycle is None:
            return StepPlan(lab, [])
        self.unlabeled = UnlabeledRows(self.features, unl, self.device, resident_bytes)
        return StepPlan(lab, self.unlabeled.steps, unlabeled_on_device=self.unlabeled.resident is not None)

    def gather(self, ix: Tensor, iu: Tensor | np.ndarray | None) -> tuple[Tensor, Tensor]:
        """One step's batch ``([B, F], [B])``: labeled rows ``ix``, then unlabeled rows ``iu`` labeled -1."""
        x, y = self.x_lab[ix], self.y_lab[ix]
        if iu is None or self.unlabeled is None:
            return x, y
        xu = self.unlabeled.rows(iu)
        x = torch.cat([x, xu])
        y = torch.cat([y, torch.full((len(xu),), -1, dtype=torch.int64, device=self.device)])
        return x, y


def _read_back(trace: Tensor, history: list[float], loss_name: str) -> None:
    """Append the losses in ``trace`` ``[steps so far]`` not yet in ``history``; raise on a non-finite one."""
    start = len(history)
    block = trace[start:].cpu().tolist()
    for i, v in enumerate(block):
        if not math.isfinite(v):
            raise FloatingPointError(f"loss {loss_name} became {v} at step {start + i}; lower the learning rate")
    history.extend(block)


def new_head_and_loss(in_dim: int, num_classes: int, config: TrainConfig) -> tuple[ProjectionHead, EmbeddingLoss]:
    """A fresh projection head ``[B, in_dim] -> [B, D]`` and loss for ``num_classes`` classes."""
    return _fresh(in_dim, config.resolved_dim(num_classes), num_classes, config)


def _fresh(in_dim: int, dim: int, num_classes: int, config: TrainConfig) -> tuple[ProjectionHead, EmbeddingLoss]:
    head = ProjectionHead(in_dim, dim, config.hidden_dim, config.dropout)
    loss = create_loss(config.loss, num_classes=num_classes, embedding_dim=dim, **dict(config.loss_params))
    return head, loss


def embed_features(head: ProjectionHead, features: Any, *, chunk: int = EMBED_CHUNK, device: str = "auto",
                   precision: str = "float32") -> np.ndarray:
    """Run the head over ``features`` ``[N, F]`` (array, memmap or row view) → ``[N, D]`` float32,
    ``chunk`` rows at a time (:func:`~labeltool.models.heads.pool_pass`). ``precision``
    ``"float32"`` runs the module as trained; ``"bfloat16"`` its folded form with the first
    product in bfloat16; ``"auto"`` picks bfloat16 on a CPU with AMX."""
    return pool_pass(head, features, pick_device(device), chunk=chunk, precision=precision)


@torch.inference_mode()
def class_probabilities(loss: EmbeddingLoss, embeddings: np.ndarray, *, chunk: int = 65536) -> np.ndarray | None:
    """Softmax of the loss's classifier ``[N, C]``, or None when the loss has no classifier."""
    if not loss.has_classifier:
        return None
    loss = loss.cpu().eval()
    out = []
    for s in range(0, embeddings.shape[0], chunk):
        out.append(torch.softmax(loss.logits(torch.as_tensor(embeddings[s : s + chunk])), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, loss.num_classes), dtype=np.float32)


def state_dict_of(result_head: ProjectionHead, loss: EmbeddingLoss) -> dict[str, Tensor]:
    """Flat state dict ``head.* / loss.*`` for a checkpoint."""
    state = {f"head.{k}": v.detach().cpu().contiguous() for k, v in result_head.state_dict().items()}
    state.update({f"loss.{k}": v.detach().cpu().contiguous() for k, v in loss.state_dict().items()})
    return state


def load_state(head: ProjectionHead, loss: EmbeddingLoss, state: Mapping[str, Tensor]) -> None:
    """Inverse of :func:`state_dict_of` (strict)."""
    head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
    loss.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("loss.")})

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

import numpy as np
import torch
from torch import Tensor

from labeltool.config import TrainConfig
from labeltool.losses import EmbeddingLoss, create_loss
from labeltool.models.extract import pick_device
from labeltool.models.heads import ProjectionHead
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

    Losses that use unlabeled images get their rows copied once to the device (as float16)
    when they take at most ``resident_bytes``; a larger pool is gathered batch by batch.
    """
    labels = np.asarray(labels, dtype=np.int64)
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
    batches = HeadBatches(features, labels, labeled, loss.uses_unlabeled, config, rng, device, resident_bytes)
    steps = step_count(len(labeled), batches.sampler.batch_size, config)
    t0 = time.perf_counter()
    history = _run_steps(head, loss, opt, batches, steps, progress, config.loss)
    moments = adam_moments(opt, named)
    return TrainResult(head.cpu(), loss.cpu(), history, steps, time.perf_counter() - t0, str(device), moments)


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


def step_count(n_labeled: int, batch_size: int, config: TrainConfig) -> int:
    """Training steps: ``epochs`` passes over the labeled rows, within ``[min_steps, max_steps]``."""
    per_epoch = max(1, math.ceil(n_labeled / batch_size))
    return int(min(max(config.epochs * per_epoch, config.min_steps), config.max_steps))


def _run_steps(head: ProjectionHead, loss: EmbeddingLoss, opt: torch.optim.Optimizer, batches: HeadBatches,
               steps: int, progress: StepProgress | None, loss_name: str) -> list[float]:
    """Run ``steps`` optimiser steps (train mode, back in eval mode after); the per-step losses."""
    head.train()
    loss.train()
    trace = torch.zeros(steps, device=batches.device)  # per-step loss, read back in blocks (no sync per step)
    history: list[float] = []
    every = 10 if progress else 50
    for start in range(0, steps, every):
        block = _draw_block(batches.sampler, batches.unlabeled, min(every, steps - start), batches.device)
        for step, (ix, iu) in enumerate(block, start):
            x, y = batches.gather(ix, iu)
            value = loss(head(x), y)
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


class UnlabeledBatches:
    """Unlabeled rows for the losses that use them, cycling through the pool: indices are drawn
    on the host (:meth:`draw`), rows ``[U, F]`` float32 on ``device`` come from :meth:`rows`."""

    def __init__(self, features: np.ndarray, unlabeled: np.ndarray, batch: int, rng: np.random.Generator,
                 device: torch.device, resident_bytes: int) -> None:
        self.features, self.device = features, device
        self.resident: Tensor | None = None
        if len(unlabeled) and len(unlabeled) * features.shape[1] * 2 <= resident_bytes:
            self.resident = torch.as_tensor(np.asarray(features[unlabeled], dtype=np.float16), device=device)
            self.cycle = CyclingSampler(np.arange(len(unlabeled)), batch, rng)
        else:
            self.cycle = CyclingSampler(unlabeled, batch, rng)

    def __len__(self) -> int:
        return len(self.cycle)

    def draw(self) -> np.ndarray:
        """Host indices of the next batch (rows of the resident copy, else of ``features``)."""
        ix = self.cycle()
        return ix if self.resident is not None else np.sort(ix)  # sorted: memmap locality

    def rows(self, ix: Tensor | np.ndarray) -> Tensor:
        """Float32 rows ``[U, F]`` on the device for indices from :meth:`draw` (moved by :func:`_draw_block`)."""
        if self.resident is not None:
            return self.resident[ix].float()
        return torch.as_tensor(np.asarray(self.features[np.asarray(ix)], dtype=np.float32), device=self.device)


class HeadBatches:
    """The rows a head trains on: labeled features ``[L, F]`` and labels ``[L]`` on ``device``, a
    class-balanced :class:`BalancedSampler` over them, and the unlabeled pool (empty unless
    ``with_unlabeled``) as :class:`UnlabeledBatches`."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, labeled: np.ndarray, with_unlabeled: bool,
                 config: TrainConfig, rng: np.random.Generator, device: torch.device, resident_bytes: int) -> None:
        self.device = device
        self.x_lab = torch.as_tensor(np.asarray(features[labeled], dtype=np.float32), device=device)
        self.y_lab = torch.as_tensor(labels[labeled], device=device)
        self.sampler = BalancedSampler(labels[labeled], config.classes_per_batch, config.samples_per_class, rng)
        unlabeled = np.flatnonzero(labels < 0) if with_unlabeled else np.zeros(0, dtype=np.int64)
        self.unlabeled = UnlabeledBatches(features, unlabeled, config.unlabeled_batch, rng, device, resident_bytes)

    def gather(self, ix: Tensor, iu: Tensor | np.ndarray | None) -> tuple[Tensor, Tensor]:
        """One step's batch ``([B, F], [B])``: labeled rows ``ix``, then unlabeled rows ``iu`` labeled -1."""
        x, y = self.x_lab[ix], self.y_lab[ix]
        if iu is None:
            return x, y
        xu = self.unlabeled.rows(iu)
        x = torch.cat([x, xu])
        y = torch.cat([y, torch.full((len(xu),), -1, dtype=torch.int64, device=self.device)])
        return x, y


def _draw_block(sampler: BalancedSampler, unlabeled: UnlabeledBatches, n: int,
                device: torch.device) -> list[tuple[Tensor, Tensor | np.ndarray | None]]:
    """Indices for ``n`` steps, drawn on the host in step order and moved to the device in one
    copy per block (a copy per step would wait for the device every step)."""
    lab, unl = [], []
    for _ in range(n):
        lab.append(sampler())
        if len(unlabeled):
            unl.append(unlabeled.draw())
    lab_dev = torch.as_tensor(np.concatenate(lab), device=device).split([len(a) for a in lab])
    if not unl:
        return [(ix, None) for ix in lab_dev]
    if unlabeled.resident is None:  # gathered on the host anyway
        return list(zip(lab_dev, unl, strict=True))
    unl_dev = torch.as_tensor(np.concatenate(unl), device=device).split([len(u) for u in unl])
    return list(zip(lab_dev, unl_dev, strict=True))


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


@torch.inference_mode()
def embed_features(head: ProjectionHead, features: np.ndarray, *, chunk: int = 65536, device: str = "auto") -> np.ndarray:
    """Run the head over ``features`` ``[N, F]`` (memmap-friendly, chunked) → ``[N, D]`` float32."""
    dev = pick_device(device)
    head = head.to(dev).eval()
    out = np.empty((features.shape[0], head.out_dim), dtype=np.float32)
    for s in range(0, features.shape[0], chunk):
        x = torch.as_tensor(np.asarray(features[s : s + chunk], dtype=np.float32), device=dev)
        out[s : s + chunk] = head(x).float().cpu().numpy()
    head.cpu()
    return out


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

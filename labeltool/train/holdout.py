"""Early stopping on a held-out part of the labeled images.

:func:`holdout_split` sets a stratified share of the labeled images aside. During training,
:class:`HoldoutEval` embeds the held-out images and the training labeled images (eval mode, no
augmentation, the backbone's :func:`~labeltool.models.backbones.make_preprocess`; both decoded
once, kept as float16) and scores the held-out accuracy of a 1-nearest-neighbour vote (cosine)
against the training labeled embeddings, so it works for every loss, with or without a
classifier. :class:`BestState` keeps the modules' state at the best score and says when
``patience`` evaluations in a row brought no improvement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from labeltool.data.scan import ImageDecodeError, load_image
from labeltool.models.backbones import BackboneSpec, make_preprocess

__all__ = ["BestState", "HoldoutEval", "holdout_split", "nearest_neighbour_accuracy"]


def holdout_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``labels`` ``[L]`` into ``(train_idx, held_idx)`` (sorted int64 indices).

    Every class with at least 2 images holds out ``round(fraction * n)`` of them, at least 1 and
    at most ``n - 1`` (each class keeps a training image); a class with 1 image holds none out.
    ``fraction=0`` holds nothing out. Deterministic for a given ``rng`` state.
    """
    labels = np.asarray(labels)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must lie in [0, 1), got {fraction}")
    held: list[np.ndarray] = []
    if fraction > 0:
        for c in np.unique(labels):
            rows = np.flatnonzero(labels == c)
            if len(rows) < 2:
                continue
            take = min(len(rows) - 1, max(1, int(round(fraction * len(rows)))))
            held.append(rng.permutation(rows)[:take])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), held_idx)
    return train_idx.astype(np.int64), held_idx.astype(np.int64)


def nearest_neighbour_accuracy(reference: Tensor, reference_labels: Tensor, query: Tensor,
                               query_labels: Tensor) -> float:
    """Share of ``query`` rows ``[Q, D]`` whose cosine-nearest ``reference`` row ``[R, D]`` has
    the query's label (labels ``[R]``, ``[Q]``)."""
    ref = nn.functional.normalize(reference.float(), dim=1)
    qry = nn.functional.normalize(query.float(), dim=1)
    nearest = (qry @ ref.T).argmax(dim=1)
    return float((reference_labels[nearest] == query_labels).float().mean())


def _decode(spec: BackboneSpec, paths: Sequence[Path], labels: np.ndarray) -> tuple[Tensor, Tensor]:
    """Preprocessed images ``[N, 3, S, S]`` (float16) and labels ``[N]`` of the files that decode."""
    preprocess = make_preprocess(spec)
    images: list[Tensor] = []
    kept: list[int] = []
    for path, y in zip(paths, labels, strict=True):
        try:
            images.append(preprocess(load_image(path)).half())
        except (ImageDecodeError, OSError, ValueError):
            continue
        kept.append(int(y))
    s = spec.input_size
    x = torch.stack(images) if images else torch.zeros(0, 3, s, s, dtype=torch.float16)
    return x, torch.tensor(kept, dtype=torch.int64)


class HoldoutEval:
    """The held-out images and the training labeled images, decoded once, and their scoring."""

    def __init__(self, spec: BackboneSpec, paths: Sequence[Path], labels: np.ndarray, train_idx: np.ndarray,
                 held_idx: np.ndarray, batch_size: int = 256) -> None:
        self.reference, self.reference_labels = _decode(spec, [paths[i] for i in train_idx], labels[train_idx])
        self.held, self.held_labels = _decode(spec, [paths[i] for i in held_idx], labels[held_idx])
        self.batch_size = batch_size

    @property
    def active(self) -> bool:
        """Whether there is anything to score (held-out and reference images that decoded)."""
        return len(self.held) > 0 and len(self.reference) > 0

    @torch.no_grad()
    def embed(self, model: nn.Module, images: Tensor, device: torch.device, amp: torch.dtype | None) -> Tensor:
        """``model(images)`` chunk by chunk: ``[N, 3, S, S]`` → float32 ``[N, D]`` on ``device``."""
        out: list[Tensor] = []
        for i in range(0, len(images), self.batch_size):
            x = images[i : i + self.batch_size].to(device, non_blocking=True).float()
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
            with ctx:
                out.append(model(x).float())
        return torch.cat(out)

    def accuracy(self, model: nn.Module, device: torch.device, amp: torch.dtype | None) -> float:
        """Held-out 1-NN accuracy of ``model`` (images → embeddings), run in eval mode; the
        caller puts its modules back into training mode."""
        model.eval()
        ref = self.embed(model, self.reference, device, amp)
        held = self.embed(model, self.held, device, amp)
        return nearest_neighbour_accuracy(ref, self.reference_labels.to(device), held, self.held_labels.to(device))


class BestState:
    """The best score so far with a CPU copy of the modules' state at that step, and patience."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: float | None = None
        self.best_step: int | None = None
        self.history: list[tuple[int, float]] = []
        self.since_best = 0
        self._state: list[dict[str, Tensor]] = []

    def update(self, step: int, score: float, modules: Sequence[nn.Module]) -> bool:
        """Record ``score`` at ``step``; keep the modules' state when it is the best so far
        (strictly higher: ties keep the earlier state). Returns True when training should stop."""
        self.history.append((step, score))
        if self.best is None or score > self.best:
            self.best, self.best_step, self.since_best = score, step, 0
            self._state = [{k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for m in modules]
        else:
            self.since_best += 1
        return self.since_best >= self.patience

    def restore(self, modules: Sequence[nn.Module]) -> None:
        """Load the best state back into ``modules`` (the same ones, in the same order); nothing
        when no score was recorded."""
        if not self._state:
            return
        for module, state in zip(modules, self._state, strict=True):
            module.load_state_dict(state)

"""Batched backbone feature extraction (CPU, or CUDA with autocast and channels_last)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from labeltool.data.features import FeatureCache
from labeltool.data.scan import ImageDecodeError, load_image
from labeltool.models.backbones import Backbone, make_preprocess

Progress = Callable[[int, int], None]


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as asked."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(preference)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} was requested but no CUDA GPU is available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {preference!r}; use auto, cpu or cuda[:N]")
    return dev


class _ImageFiles(Dataset[tuple[int, torch.Tensor, str]]):
    """Decodes and preprocesses image files; a file that fails gives an empty tensor + reason."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable, size: int) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        try:
            return i, self.preprocess(load_image(self.paths[i])), ""
        except (ImageDecodeError, OSError, ValueError) as e:
            return i, torch.zeros(3, self.size, self.size), str(e) or type(e).__name__


def _collate(items: list[tuple[int, torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    idx = torch.tensor([i for i, _, _ in items], dtype=torch.int64)
    return idx, torch.stack([x for _, x, _ in items]), [e for _, _, e in items]


@dataclass
class ExtractionResult:
    """What an extraction run did: rows computed and the files that failed (path → reason)."""

    computed: int
    failed: dict[str, str]
    device: str


def iter_features(
    backbone: Backbone,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    device: torch.device | None = None,
    num_workers: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Yield ``(indices [b], features [b, D] float32, errors [b])`` batch by batch.

    ``errors[j]`` is empty when image ``indices[j]`` decoded; otherwise its features are garbage
    and must be dropped. Uses channels_last, and fp16 autocast on CUDA.
    """
    device = device or pick_device()
    if num_workers is None:
        num_workers = 0 if len(paths) < 4 * batch_size else min(4, max(1, (os.cpu_count() or 2) - 1))
    loader = DataLoader(
        _ImageFiles(paths, make_preprocess(backbone.spec), backbone.spec.input_size),
        batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )
    # channels_last pays on both: about 1.5x on a 2-core CPU for EfficientNet-Lite0 at 224 px
    model = backbone.to(device).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for idx, x, errors in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            if device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    feats = model(x)
            else:
                feats = model(x)
            yield idx.numpy(), feats.float().cpu().numpy(), errors


def extract_to_cache(
    backbone: Backbone,
    cache: FeatureCache,
    items: Sequence[tuple[str, Path]],
    *,
    batch_size: int = 32,
    device: torch.device | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> ExtractionResult:
    """Compute features for ``items`` ``(sha256, path)`` not yet in ``cache`` and append them.

    Each batch is written as soon as it is computed, so an interrupted run keeps its progress.
    """
    device = device or pick_device()
    todo_hashes = set(cache.missing([h for h, _ in items]))
    todo: list[tuple[str, Path]] = []
    for h, p in items:
        if h in todo_hashes:
            todo.append((h, p))
            todo_hashes.discard(h)
    failed: dict[str, str] = {}
    done = 0
    if progress:
        progress(0, len(todo))
    for idx, feats, errors in iter_features(
        backbone, [p for _, p in todo], batch_size=batch_size, device=device, num_workers=num_workers
    ):
        keep = [j for j, e in enumerate(errors) if not e]
        for j, e in enumerate(errors):
            if e:
                failed[str(todo[int(idx[j])][1])] = e
        if keep:
            cache.append([todo[int(idx[j])][0] for j in keep], feats[keep])
        done += len(idx)
        if progress:
            progress(done, len(todo))
    return ExtractionResult(computed=done - len(failed), failed=failed, device=str(device))

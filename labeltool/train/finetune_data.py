"""The fine-tuning trainer's data: the image dataset, its per-step batch sampler and loader.

A step's batch holds P x K labeled images (augmented with the weak view) and then up to
``unlabeled_batch`` unlabeled ones (label ``-1``, weak view); with consistency training each
unlabeled image also comes as a strong view (:mod:`labeltool.models.augment`). Images are read
only through :func:`labeltool.data.scan.load_image`; a file that fails to decode gives zeros
and ``ok=False``, and the trainer drops it (both of its views).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from labeltool.config import FinetuneConfig
from labeltool.data.scan import ImageDecodeError, load_image
from labeltool.models.augment import (
    SMALL_INPUT,
    native_size,
    plain_from_native,
    strong_from_native,
    strong_transform,
    weak_from_native,
    weak_transform,
)
from labeltool.models.backbones import BackboneSpec, make_preprocess
from labeltool.train.sampling import BalancedSampler, CyclingSampler

Transform = Callable[[Image.Image], Tensor]
_NO_VIEW = torch.zeros(0)


class Batch(NamedTuple):
    """``images [B, 3, S, S]`` (weak views), ``labels [B]`` (-1 = unlabeled), ``ok [B]`` (decoded),
    ``strong [U, 3, S, S]``: strong views of the ``U`` unlabeled rows in order (``U = 0`` without
    consistency training)."""

    images: Tensor
    labels: Tensor
    ok: Tensor
    strong: Tensor


class ImageLabelDataset(Dataset[tuple[Tensor, Tensor, int, bool]]):
    """``(image [3, S, S], strong [3, S, S] or empty, label, ok)``; the strong view only for
    unlabeled rows and only when ``strong`` is given. A file that fails to decode gives zeros."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Transform, size: int,
                 strong: Transform | None = None, native: Transform | None = None) -> None:
        self.paths, self.labels = list(paths), [int(v) for v in labels]
        self.transform, self.strong, self.size = transform, strong, size
        # ``native``: a deterministic first step (file → uint8 [3, S, S]) whose result is kept, so
        # each small image is decoded once per run; ``transform``/``strong`` then start from it
        self.native = native
        self._kept: dict[int, Tensor | None] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, Tensor, int, bool]]:
        """A batch's items. In the main process (``num_workers=0``) they are made on one thread:
        per-image transforms gain nothing from intra-op threads, and on a busy CPU the thread
        pool's wake-ups cost more than the work (a 28 px RandAugment: 0.4 ms alone, 8 ms on 2
        contended threads). Loader workers already run single-threaded."""
        if get_worker_info() is not None:
            return [self[i] for i in indices]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [self[i] for i in indices]
        finally:
            torch.set_num_threads(threads)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int, bool]:
        two_views = self.strong is not None and self.labels[i] < 0
        try:
            img: Image.Image | Tensor = self._image(i)
            strong = self.strong(img) if two_views and self.strong is not None else _NO_VIEW  # type: ignore[arg-type]
            return self.transform(img), strong, self.labels[i], True  # type: ignore[arg-type]
        except (ImageDecodeError, OSError, ValueError):
            blank = torch.zeros(3, self.size, self.size)
            return blank, blank if two_views else _NO_VIEW, self.labels[i], False

    def _image(self, i: int) -> Image.Image | Tensor:
        """Row ``i``'s image: the decoded file, or its kept native-size uint8 ``[3, S, S]``."""
        if self.native is None:
            return load_image(self.paths[i])
        if i not in self._kept:
            try:
                self._kept[i] = self.native(load_image(self.paths[i]))
            except (ImageDecodeError, OSError, ValueError):
                self._kept[i] = None
        kept = self._kept[i]
        if kept is None:
            raise ValueError(f"{self.paths[i]} could not be decoded")
        return kept


def collate(items: list[tuple[Tensor, Tensor, int, bool]]) -> Batch:
    """Stack the dataset's items into a :class:`Batch`."""
    x = torch.stack([t for t, _, _, _ in items])
    strong = [s for _, s, _, _ in items if s.numel()]
    xs = torch.stack(strong) if strong else x.new_zeros(0, *x.shape[1:])
    y = torch.tensor([y for _, _, y, _ in items], dtype=torch.int64)
    return Batch(x, y, torch.tensor([ok for _, _, _, ok in items]), xs)


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


def workers(config: FinetuneConfig, device: torch.device) -> int:
    """Loader worker processes: the config's, else up to 8 on CUDA and none on a CPU."""
    if config.num_workers is not None:
        return config.num_workers
    return min(8, max(1, (os.cpu_count() or 2) - 1)) if device.type == "cuda" else 0


def make_loader(spec: BackboneSpec, paths: Sequence[Path], labels: np.ndarray, unlabeled: Sequence[Path],
                config: FinetuneConfig, steps: int, rng: np.random.Generator, seed: int,
                device: torch.device) -> DataLoader[Batch]:
    """``steps`` :class:`Batch` es: labeled ``paths`` with ``labels`` (weakly augmented when
    ``config.augment``), then ``unlabeled`` ones labeled -1 (with a strong view when
    ``config.consistency > 0``)."""
    tf, strong, native = _transforms(spec, config)
    dataset = ImageLabelDataset(list(paths) + list(unlabeled), list(labels) + [-1] * len(unlabeled), tf,
                                spec.input_size, strong, native)
    batches = StepBatches(labels, len(unlabeled), config, steps, rng)
    n_workers = workers(config, device)
    return DataLoader(
        dataset, batch_sampler=batches, num_workers=n_workers, collate_fn=collate,  # type: ignore[arg-type]
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
        persistent_workers=False, prefetch_factor=4 if n_workers else None,
    )


def _transforms(spec: BackboneSpec, config: FinetuneConfig) -> tuple[Transform, Transform | None, Transform | None]:
    """``(weak or plain view, strong view or None, native first step or None)``. Inputs of at
    most ``SMALL_INPUT`` px keep each image at native size after its first decode (60k 28 px
    images: 141 MB), so a run decodes every file once instead of once per draw."""
    strong_on = config.consistency > 0
    if spec.input_size <= SMALL_INPUT:
        view = weak_from_native(spec) if config.augment else plain_from_native(spec)
        return view, strong_from_native(spec) if strong_on else None, native_size(spec)
    tf = weak_transform(spec, config.crop_scale) if config.augment else make_preprocess(spec)
    return tf, strong_transform(spec, config.crop_scale) if strong_on else None, None

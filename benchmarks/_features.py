"""Backbone features for the benchmarks, extracted once and cached as ``.npy`` (memory-mapped on load).

Images are decoded once into uint8 arrays (``_datasets``); each batch goes through labeltool's
own preprocessing transforms (resize short side, centre-crop, scale, normalise) on the compute
device. On CUDA the backbone runs under fp16 autocast in channels_last, as ``labeltool.models.extract``
does. ``init="random"`` builds the same architecture with timm's random initialisation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import torch
import torch.nn.functional as F
from _datasets import (
    ImageSet,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    stratified_subset,
    synthetic_images,
)
from torchvision.transforms import v2 as T

from labeltool.models.backbones import DEFAULT_BACKBONE, Backbone, create_backbone, get_spec, make_preprocess
from labeltool.models.extract import pick_device

INITS = ("pretrained", "random")


@dataclass
class FeatureSet:
    """Backbone features of a dataset's train and test images, with labels and extraction facts."""

    name: str
    classes: list[str]
    train: np.ndarray
    y_train: np.ndarray
    test: np.ndarray
    y_test: np.ndarray
    meta: dict[str, Any]


def make_backbone(init: str, image_size: int | None, name: str = DEFAULT_BACKBONE, seed: int = 0) -> Backbone:
    """The bundled backbone with its pretrained weights, or the same architecture randomly initialised."""
    if init == "pretrained":
        return create_backbone(name, image_size=image_size)
    if init != "random":
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    import timm

    spec = get_spec(name, image_size=image_size)
    torch.manual_seed(seed)
    model = timm.create_model(spec.arch, pretrained=False, num_classes=0)  # forward → pooled features
    return Backbone(replace(spec, name=f"{spec.name}-random"), model, None).eval()


def batch_preprocess(spec: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """labeltool's own preprocessing (``make_preprocess``) minus the PIL step, for uint8 batches.

    The returned function maps uint8 ``[B, H, W(, 3)]`` (on any device) to normalised float
    ``[B, 3, S, S]``; on the CPU it matches the per-image PIL path exactly.
    """
    tail = T.Compose(list(make_preprocess(spec).transforms[1:]))

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[..., None].expand(-1, -1, -1, 3)
        return tail(x.permute(0, 3, 1, 2).contiguous())  # type: ignore[no-any-return]

    return run


@torch.inference_mode()
def extract(images: np.ndarray, backbone: Backbone, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Features ``[N, F]`` (float16) of uint8 images ``[N, H, W(, 3)]``."""
    prep = batch_preprocess(backbone.spec)
    model = backbone.to(device).eval()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    out: np.ndarray | None = None
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[s : s + batch_size])).to(device, non_blocking=True)
        x = prep(x)
        if cuda:
            with torch.autocast("cuda", dtype=torch.float16):
                f = model(x.contiguous(memory_format=torch.channels_last))
        else:
            f = model(x)
        f = f.float().cpu().numpy()
        if out is None:
            out = np.empty((len(images), f.shape[1]), dtype=np.float16)
        out[s : s + len(f)] = f
    backbone.cpu()
    assert out is not None
    return out


@torch.inference_mode()
def preprocess_check(images: np.ndarray, backbone: Backbone, device: torch.device) -> float:
    """Lowest cosine similarity between features of images preprocessed on the CPU (exactly
    labeltool's per-image path) and on ``device``, both through the same model on ``device``."""
    prep = batch_preprocess(backbone.spec)
    x = torch.from_numpy(np.array(images))
    a = prep(x).to(device)
    b = prep(x.to(device))
    model = backbone.to(device).eval()
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        fa, fb = model(a).float(), model(b).float()
    backbone.cpu()
    return float(F.cosine_similarity(fa, fb).min())


def load_images(dataset: str, cache_dir: Path, subset: int | None = None, seed: int = 0) -> ImageSet:
    """The named image set; ``subset`` keeps a stratified ``subset`` train and ``subset // 5`` test rows."""
    if dataset == "cifar10":
        ds = load_cifar10(cache_dir)
    elif dataset == "fashion_mnist":
        ds = load_fashion_mnist()
    elif dataset == "mnist":
        ds = load_mnist()
    elif dataset == "synthetic_images":
        ds = synthetic_images(subset or 500, max(50, (subset or 500) // 5), seed=seed)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; valid: cifar10, fashion_mnist, mnist, synthetic_images, synthetic")
    if subset:
        tr = stratified_subset(ds.y_train, subset, seed)
        te = stratified_subset(ds.y_test, max(10, subset // 5), seed)
        ds = ImageSet(ds.name, ds.classes, ds.x_train[tr], ds.y_train[tr], ds.x_test[te], ds.y_test[te])
    return ds


def synthetic_features(n_train: int, n_test: int, classes: int = 10, dim: int = 64, seed: int = 0,
                       spread: float = 1.2) -> FeatureSet:
    """Gaussian class clusters standing in for backbone features (smoke runs, speed runs)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % classes).astype(np.int64)
        x = centres[y] + spread * rng.standard_normal((n, dim)).astype(np.float32)
        return x.astype(np.float16), y

    tr, y_tr = make(n_train)
    te, y_te = make(n_test)
    return FeatureSet("synthetic", [f"class{c}" for c in range(classes)], tr, y_tr, te, y_te,
                      {"source": "synthetic gaussian clusters", "dim": dim})


def load_features(
    dataset: str,
    init: str,
    image_size: int | None,
    cache_dir: Path,
    *,
    subset: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    seed: int = 0,
) -> FeatureSet:
    """Cached features of ``dataset`` (computing and caching them on first use)."""
    if dataset == "synthetic":
        n = subset or 2000
        return synthetic_features(n, max(100, n // 5), seed=seed)
    key = f"{dataset}-{DEFAULT_BACKBONE}-{init}-{image_size or 'native'}px" + (f"-sub{subset}s{seed}" if subset else "")
    folder = cache_dir / "features" / key
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        ds = load_images(dataset, cache_dir, subset, seed)
        dev = pick_device(device)
        backbone = make_backbone(init, image_size)
        t0 = time.perf_counter()
        tr = extract(ds.x_train, backbone, dev, batch_size)
        te = extract(ds.x_test, backbone, dev, batch_size)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        check = preprocess_check(ds.x_test[:32], backbone, dev) if dev.type != "cpu" else 1.0
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "train.npy", tr)
        np.save(folder / "test.npy", te)
        np.save(folder / "y_train.npy", ds.y_train)
        np.save(folder / "y_test.npy", ds.y_test)
        meta = {"dataset": dataset, "classes": ds.classes, "backbone": backbone.spec.name, "init": init,
                "input_px": backbone.spec.input_size, "images": len(tr) + len(te), "device": str(dev),
                "device_name": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
                "seconds": round(secs, 2), "cpu_vs_device_preprocess_min_cosine": round(check, 5), "img_per_s": round((len(tr) + len(te)) / secs, 1),
                "note": "decoded once to uint8 (not timed); labeltool's resize + crop + normalise and the backbone on the device"}
        meta_path.write_text(json.dumps(meta, indent=2))
    meta = json.loads(meta_path.read_text())
    return FeatureSet(dataset, meta["classes"], np.load(folder / "train.npy", mmap_mode="r"),
                      np.load(folder / "y_train.npy"), np.load(folder / "test.npy", mmap_mode="r"),
                      np.load(folder / "y_test.npy"), meta)

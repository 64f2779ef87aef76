"""Benchmark datasets as uint8 arrays: CIFAR-10 (JPEG tarball), Fashion-MNIST (IDX files) and a
synthetic set for smoke runs. Decoded arrays are cached as ``.npz`` so later runs skip decoding."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the benchmark data sits beside the repository (../shared/data/) unless CIFAR10_TAR says otherwise
_DEFAULT_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
CIFAR10_TAR = Path(os.environ.get("CIFAR10_TAR", str(_DEFAULT_TAR)))
FMNIST_DIR = Path(os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
MNIST_NPZ = Path(os.environ.get("MNIST_NPZ", str(_DEFAULT_TAR.parent / "mnist.npz")))
FMNIST_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                  "ankle boot"]


@dataclass
class ImageSet:
    """Images ``[N, H, W, 3]`` or ``[N, H, W]`` (uint8) with labels, split into train and test."""

    name: str
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _decode_jpegs(blobs: list[bytes]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


def load_cifar10(cache_dir: Path, tar_path: Path = CIFAR10_TAR, workers: int | None = None) -> ImageSet:
    """CIFAR-10 from the JPEG tarball (``cifar10/{train,test}/<class>/NNNN.jpg``), decoded once."""
    cache = cache_dir / "cifar10_uint8.npz"
    if not cache.is_file():
        members: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
        with tarfile.open(tar_path, "r:gz") as tar:
            for m in tar:
                parts = m.name.split("/")
                if not m.isfile() or len(parts) < 4 or not parts[-1].lower().endswith(".jpg"):
                    continue
                f = tar.extractfile(m)
                assert f is not None
                members[parts[-3]].append((parts[-2], parts[-1], f.read()))
        classes = sorted({c for c, _, _ in members["train"]})
        arrays: dict[str, np.ndarray] = {}
        workers = workers or max(1, min(16, os.cpu_count() or 1))
        for split, rows in members.items():
            rows.sort(key=lambda r: (r[0], r[1]))
            blobs = [b for _, _, b in rows]
            step = max(1, len(blobs) // (workers * 4))
            chunks = [blobs[i : i + step] for i in range(0, len(blobs), step)]
            if workers > 1:
                with ProcessPoolExecutor(workers) as ex:
                    parts_out = list(ex.map(_decode_jpegs, chunks))
            else:
                parts_out = [_decode_jpegs(c) for c in chunks]
            arrays[f"x_{split}"] = np.concatenate(parts_out)
            arrays[f"y_{split}"] = np.array([classes.index(c) for c, _, _ in rows], dtype=np.int64)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, classes=np.array(classes), **arrays)
        tmp.replace(cache)
    z = np.load(cache)
    return ImageSet("cifar10", [str(c) for c in z["classes"]], z["x_train"], z["y_train"], z["x_test"], z["y_test"])


def _open_idx(folder: Path, stem: str) -> bytes:
    for suffix, opener in ((".gz", gzip.open), (".xz", lzma.open), ("", open)):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            with opener(path, "rb") as f:  # type: ignore[operator]
                return bytes(f.read())
    raise FileNotFoundError(
        f"{stem}(.gz|.xz) not found in {folder}; install the Debian package dataset-fashion-mnist "
        "or set FMNIST_DIR"
    )


def _parse_idx(raw: bytes) -> np.ndarray:
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(folder: Path = FMNIST_DIR) -> ImageSet:
    """Fashion-MNIST from its IDX files (gzip, xz or plain): 60k train / 10k test, 28x28 grey."""
    x_tr = _parse_idx(_open_idx(folder, "train-images-idx3-ubyte"))
    y_tr = _parse_idx(_open_idx(folder, "train-labels-idx1-ubyte")).astype(np.int64)
    x_te = _parse_idx(_open_idx(folder, "t10k-images-idx3-ubyte"))
    y_te = _parse_idx(_open_idx(folder, "t10k-labels-idx1-ubyte")).astype(np.int64)
    return ImageSet("fashion_mnist", list(FMNIST_CLASSES), x_tr, y_tr, x_te, y_te)


def load_mnist(path: Path = MNIST_NPZ) -> ImageSet:
    """MNIST from its ``.npz`` (``x_train [60000, 28, 28]`` uint8 ...): 60k train / 10k test."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; set MNIST_NPZ to the file described in shared/data/README.md")
    with np.load(path) as z:
        x_tr, y_tr, x_te, y_te = (np.asarray(z[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    return ImageSet("mnist", [str(d) for d in range(10)], x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64))


def synthetic_images(n_train: int, n_test: int, classes: int = 10, px: int = 32, seed: int = 0) -> ImageSet:
    """Coloured blobs on noise, one colour and position per class: learnable, for smoke runs."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (classes, 3))
    centres = rng.integers(px // 4, 3 * px // 4, (classes, 2))
    yy, xx = np.mgrid[0:px, 0:px]

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % classes
        x = rng.integers(0, 96, (n, px, px, 3)).astype(np.int64)
        for c in range(classes):
            blob = ((yy - centres[c, 0]) ** 2 + (xx - centres[c, 1]) ** 2) < (px // 5) ** 2
            x[y == c] = np.where(blob[None, :, :, None], colours[c], x[y == c])
        return x.astype(np.uint8), y.astype(np.int64)

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    return ImageSet("synthetic_images", [f"class{c}" for c in range(classes)], x_tr, y_tr, x_te, y_te)


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` rows of ``y`` with the classes as balanced as possible."""
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = [n // len(classes) + (1 if i < n % len(classes) else 0) for i in range(len(classes))]
    out = [rng.choice(np.flatnonzero(y == c), size=min(k, int((y == c).sum())), replace=False)
           for c, k in zip(classes, per, strict=False)]
    return np.sort(np.concatenate(out))


def balanced_seed(y: np.ndarray, per_class: int, seed: int, among: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of ``per_class`` rows of every class (drawn from ``among`` if given)."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(y)) if among is None else np.asarray(among)
    out = [rng.choice(pool[y[pool] == c], size=per_class, replace=False) for c in np.unique(y[pool])]
    return np.sort(np.concatenate(out))

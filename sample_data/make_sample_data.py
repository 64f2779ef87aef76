"""Build the sample folder (seed classes + unlabeled pool) from the Fashion-MNIST test split.

Reads the gzipped IDX files of Debian's ``dataset-fashion-mnist`` package (or any folder with the
same files), picks images deterministically from the t10k split and writes 28x28 grayscale PNGs:

    <out>/<class>/t10k-NNNNN.png      5 seed images per class (NNNNN = index in the t10k split)
    <out>/unlabeled/uNNNN.png         40 per class, shuffled, names do not reveal the class
    <out>/unlabeled_labels.csv        ground truth of the pool: path,label

Usage: python sample_data/make_sample_data.py --source /usr/share/datasets/fashion-mnist --seed 0
"""

from __future__ import annotations

import argparse
import csv
import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES: tuple[str, ...] = (
    "t-shirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 array (N, rows, cols) from a gzipped IDX3 file."""
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise ValueError(f"{path}: not an IDX3 image file (magic {magic})")
        data = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
    return data.reshape(n, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """uint8 array (N,) from a gzipped IDX1 file."""
    with gzip.open(path, "rb") as f:
        magic, n = struct.unpack(">II", f.read(8))
        if magic != 2049:
            raise ValueError(f"{path}: not an IDX1 label file (magic {magic})")
        return np.frombuffer(f.read(n), dtype=np.uint8)


def choose(labels: np.ndarray, n_seed: int, n_pool: int, seed: int) -> tuple[dict[int, list[int]], list[int]]:
    """Seed indices per class and the shuffled pool indices (deterministic for a given seed)."""
    rng = np.random.default_rng(seed)
    seeds: dict[int, list[int]] = {}
    pool: list[int] = []
    for c in range(len(CLASSES)):
        picked = rng.permutation(np.flatnonzero(labels == c))[: n_seed + n_pool]
        seeds[c] = sorted(int(i) for i in picked[:n_seed])
        pool.extend(int(i) for i in picked[n_seed:])
    order = rng.permutation(len(pool))
    return seeds, [pool[i] for i in order]


def clean(out: Path) -> None:
    """Remove PNGs written by an earlier run (only inside the folders this script owns)."""
    for folder in [*CLASSES, "unlabeled"]:
        for png in sorted((out / folder).glob("*.png")):
            png.unlink()


def save_png(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path, "PNG", optimize=True)


def build(source: Path, out: Path, seed: int, n_seed: int = 5, n_pool: int = 40) -> tuple[int, int]:
    """Write the sample folder; returns (number of seed images, number of pool images)."""
    imgs = read_idx_images(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx_labels(source / "t10k-labels-idx1-ubyte.gz")
    if len(imgs) != len(labels):
        raise ValueError("image and label files disagree on the number of items")
    seeds, pool = choose(labels, n_seed, n_pool, seed)
    clean(out)
    for c, indices in seeds.items():
        for i in indices:
            save_png(imgs[i], out / CLASSES[c] / f"t10k-{i:05d}.png")
    rows = []
    for k, i in enumerate(pool, start=1):
        rel = f"unlabeled/u{k:04d}.png"
        save_png(imgs[i], out / rel)
        rows.append((rel, CLASSES[int(labels[i])]))
    with open(out / "unlabeled_labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return sum(len(v) for v in seeds.values()), len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="folder with t10k-{images-idx3,labels-idx1}-ubyte.gz")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: the folder of this script)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the selection")
    parser.add_argument("--per-class-seed", type=int, default=5)
    parser.add_argument("--per-class-unlabeled", type=int, default=40)
    args = parser.parse_args(argv)
    n_seed, n_pool = build(args.source, args.out, args.seed, args.per_class_seed, args.per_class_unlabeled)
    print(f"wrote {n_seed} seed images in {len(CLASSES)} class folders and {n_pool} unlabeled images to {args.out}")


if __name__ == "__main__":
    main()

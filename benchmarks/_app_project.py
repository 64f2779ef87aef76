"""A project of up to millions of images for ``bench_app.py --large``, made in minutes.

Writing and hashing a million real files would take the better part of an hour on a 2-core
machine, and says nothing about the app. So: ten prototype PNGs (28x28, one class-specific band
each, one per 20,000 files, kept beside the folder); every unlabeled file is a hard link to its
class's prototype (no data of its own), and the seed images are real files in class folders. The image rows go into the store
through :meth:`~labeltool.data.store.Store.upsert_images`, as a scan writes them, except that
each row gets its own content hash (``sha256`` of ``"<relpath>"``) so every image has its own
feature row: the features are synthetic (a class centre plus noise, ``[n, dim]`` float16),
appended to the project's feature cache in chunks. Then one round is trained and proposed the
way the CLI does it (``train_round`` + ``propose``), so the Review tab has a batch.

A later rescan would find every hard-linked file's real hash differs from the row's and
re-embed it; the benchmark never rescans.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.session import LabelingSession

CLASSES = [f"class_{i:02d}" for i in range(10)]
SEED_PER_CLASS = 20
CHUNK = 50_000
LINKS_PER_FILE = 200_000  # images per prototype block: 20,000 links per file with 10 classes


def _prototype(c: int, rng: np.random.Generator) -> Image.Image:
    img = rng.integers(0, 60, (28, 28), dtype=np.uint8)
    img[2 * c : 2 * c + 6, :] += 150  # a class-specific band, so thumbnails differ
    return Image.fromarray(img)


def write_files(root: Path, n: int, seed: int = 0) -> list[dict[str, object]]:
    """The folder's files (seed copies, hard links for the rest) and their store rows."""
    rng = np.random.default_rng(seed)
    protos = root.parent / f"{root.name}-prototypes"  # outside the folder, on the same file system
    protos.mkdir(parents=True, exist_ok=True)
    (root / "unlabeled").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    n_seed = SEED_PER_CLASS * len(CLASSES)
    for name in CLASSES:
        (root / name).mkdir(exist_ok=True)
    for i in range(n):
        c = i % len(CLASSES)
        if i < n_seed:
            rel = f"{CLASSES[c]}/s{i:07d}.png"
            _prototype(c, rng).save(root / rel)
        else:
            rel = f"unlabeled/u{i:07d}.png"
            proto = protos / f"c{c}-{i // LINKS_PER_FILE}.png"  # a file takes at most 65,000 links (ext4)
            if not proto.exists():
                _prototype(c, rng).save(proto)
            os.link(proto, root / rel)
        st = (root / rel).stat()
        rows.append({"relpath": rel, "sha256": hashlib.sha256(rel.encode()).hexdigest(), "size_bytes": st.st_size,
                     "mtime_ns": st.st_mtime_ns, "width": 28, "height": 28, "status": "ok", "error": None,
                     "seed_class_id": c if i < n_seed else None})
    return rows


def build_large(root: Path, n: int, seed: int = 0) -> dict[str, float]:
    """Make the project of ``n`` images under ``root`` (see the module docstring); setup times."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    rows = write_files(root, n, seed)
    t["write_files_s"] = time.perf_counter() - t0
    with LabelingSession.open(root, scan=False) as s:
        t0 = time.perf_counter()
        s.store.ensure_classes(CLASSES)
        s.store.upsert_images(rows, [str(r["relpath"]) for r in rows])
        t["store_rows_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cache = s.feature_cache()
        rng = np.random.default_rng(seed)
        centres = rng.normal(0, 1, (len(CLASSES), cache.dim)).astype(np.float32)
        for start in range(0, n, CHUNK):
            part = rows[start : start + CHUNK]
            labels = np.arange(start, start + len(part)) % len(CLASSES)
            feats = centres[labels] + rng.normal(0, 1.2, (len(part), cache.dim)).astype(np.float32)
            cache.append([str(r["sha256"]) for r in part], feats)
        t["features_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = s.train_round(TrainConfig(min_steps=100, max_steps=100))
        s.propose(SuggestConfig(batch_size=480))
        t["round_s"] = time.perf_counter() - t0
        t["steps"] = float(m["steps"])
    return t

"""Scale without running out of memory: a 200k-image project on synthetic cached features.

    python benchmarks/bench_scale_200k.py                       # 200k images, 1280-d features
    python benchmarks/bench_scale_200k.py --images 20000 --scan-files 2000 --out /tmp/s.json

Image rows go straight into the store (what a scan writes) and class-clustered float16 features
straight into the project's feature cache, so no image is decoded; ``--scan-files N`` also
scans N real tiny PNGs to time the scanner itself. Then, as the app would: open the session,
build the pool (memory-mapped features), replay the labels, exact kNN of every unlabeled image
against the labeled ones on the memory-mapped 1280-d features, ``suggest.propose`` on them, and
a full round (train the head, embed the pool, propose). Each step reports its time, the peak
resident memory (VmRSS) and the peak anonymous memory (RssAnon, i.e. not counting the file
pages of the memory map, which the kernel can drop at any time). Prints a table and writes
``benchmarks/results/scale_200k.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labeltool.config import ProjectConfig, SuggestConfig  # noqa: E402
from labeltool.data.features import FeatureCache  # noqa: E402
from labeltool.data.project import open_project  # noqa: E402
from labeltool.data.store import Store  # noqa: E402
from labeltool.models.backbones import get_spec  # noqa: E402
from labeltool.suggest.knn import knn_search  # noqa: E402
from labeltool.suggest.propose import propose  # noqa: E402

MB = 1024 * 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class MemorySampler:
    """Samples VmRSS and RssAnon every few milliseconds; :meth:`stage` gives each step's peaks."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak_rss = self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval_s)

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, _status_kb("VmRSS"))
        self.peak_anon = max(self.peak_anon, _status_kb("RssAnon"))

    @contextmanager
    def stage(self, name: str, results: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Time a step and record its peak memory (MiB) and the anonymous memory it added."""
        self._sample()
        anon_before = _status_kb("RssAnon")
        self.peak_rss = self.peak_anon = 0
        row: dict[str, Any] = {"step": name}
        t0 = time.perf_counter()
        yield row
        row["seconds"] = round(time.perf_counter() - t0, 3)
        self._sample()
        row["peak_rss_mib"] = round(self.peak_rss / 1024, 1)
        row["peak_anon_mib"] = round(self.peak_anon / 1024, 1)
        row["anon_growth_mib"] = round((self.peak_anon - anon_before) / 1024, 1)
        results.append(row)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _rows(n: int, n_labeled: int, n_classes: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        labeled = i < n_labeled
        yield {
            "relpath": f"class{i % n_classes:03d}/img{i:07d}.jpg" if labeled else f"unlabeled/img{i:07d}.jpg",
            "sha256": format(i, "064x"), "size_bytes": 1000, "mtime_ns": 0, "width": 32, "height": 32,
            "status": "ok", "error": None, "seed_class_id": i % n_classes if labeled else None,
        }


def _write_features(cache: FeatureCache, n: int, n_classes: int, n_labeled: int, seed: int,
                    chunk: int = 8192) -> None:
    """Class-clustered float16 features, appended in chunks (never the whole matrix in RAM)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (n_classes, cache.dim)).astype(np.float32)
    truth = np.where(np.arange(n) < n_labeled, np.arange(n) % n_classes, rng.integers(0, n_classes, n))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        feats = centers[truth[s:e]] + rng.normal(0.0, 0.8, (e - s, cache.dim)).astype(np.float32)
        cache.append([format(i, "064x") for i in range(s, e)], feats)


def _scan_files(workdir: Path, n: int, results: list[dict[str, Any]], mem: MemorySampler) -> None:
    from PIL import Image

    from labeltool.data.scan import scan_folder

    folder = workdir / "scan"
    rng = np.random.default_rng(1)
    for i in range(n):
        sub = folder / (f"c{i % 10}" if i % 20 == 0 else "pool")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(sub / f"{i:07d}.png")
    with mem.stage(f"scan {n} real PNG files", results) as row:
        report = scan_folder(folder)
        row["ok"] = len(report.ok)
    with mem.stage(f"rescan {n} unchanged files", results):
        scan_folder(folder, previous=report.by_relpath())


def run(n: int, *, n_classes: int = 20, labeled: float = 0.01, workdir: Path, scan_files: int = 0,
        train: bool = True, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the project under ``workdir`` and measure every step; returns the result table."""
    from labeltool.config import TrainConfig
    from labeltool.session import LabelingSession

    results: list[dict[str, Any]] = []
    baseline = {"rss_mib": round(_status_kb("VmRSS") / 1024, 1), "anon_mib": round(_status_kb("RssAnon") / 1024, 1)}
    mem = MemorySampler()
    n_labeled = max(2 * n_classes, int(n * labeled))
    root = workdir / "photos"
    root.mkdir(parents=True)
    project = open_project(root, config=ProjectConfig())
    spec = get_spec(project.config.backbone, image_size=project.config.image_size)
    dim = spec.feature_dim
    try:
        with Store(project.db_path) as store, mem.stage(f"store: insert {n} image rows", results):
            store.ensure_classes([f"class{c:03d}" for c in range(n_classes)])
            store.upsert_images(list(_rows(n, n_labeled, n_classes)), (r["relpath"] for r in _rows(n, n_labeled, n_classes)))
        log(f"rows stored ({results[-1]['seconds']} s)")
        with mem.stage(f"feature cache: write {n} x {dim} float16", results):
            _write_features(FeatureCache(project.embeddings_dir, spec.cache_key(), dim), n, n_classes, n_labeled, seed)
        log(f"features cached ({results[-1]['seconds']} s)")
        if scan_files:
            _scan_files(workdir, scan_files, results, mem)
        with LabelingSession(project) as s:
            with mem.stage("session: pool (memory-mapped features)", results) as row:
                pool = s.pool()
                row["memmap"] = isinstance(pool.features.matrix, np.memmap)
            with mem.stage("session: label state (replay)", results) as row:
                labels = pool.labels(s.label_state().labels)
                row["labeled"] = int((labels >= 0).sum())
            lab, unl = np.flatnonzero(labels >= 0), np.flatnonzero(labels < 0)
            matrix = pool.features.matrix  # rows are in image order: labeled first, then the pool
            assert np.array_equal(pool.features.rows, np.arange(n)), "unexpected cache layout"
            with mem.stage(f"kNN (k=10): {len(unl)} memmapped queries vs {len(lab)} labeled", results) as row:
                _, idx = knn_search(matrix[unl[0]:], np.asarray(matrix[: unl[0]]), 10, chunk_size=8192)
                row["queries"] = int(idx.shape[0])
            log(f"kNN done ({results[-1]['seconds']} s)")
            with mem.stage(f"propose on {dim}-d memmapped features (batch 1000)", results) as row:
                rows = propose(matrix, labels, pool.ids, SuggestConfig(batch_size=1000))
                row["suggestions"] = len(rows)
            log(f"propose done ({results[-1]['seconds']} s)")
            if train:
                with mem.stage("round: train head (5 epochs) + embed pool + metrics", results) as row:
                    m = s.train_round(TrainConfig(epochs=5, device="cpu"))
                    row["train_seconds"] = m["train_seconds"]
                log(f"round trained ({results[-1]['seconds']} s)")
                with mem.stage("round: propose on the head embedding (batch 1000)", results) as row:
                    row["suggestions"] = len(s.propose(SuggestConfig(batch_size=1000)))
                log(f"round proposed ({results[-1]['seconds']} s)")
    finally:
        mem.close()
    feature_bytes = n * dim * 2
    return {
        "images": n, "labeled": n_labeled, "classes": n_classes, "feature_dim": dim, "baseline_after_imports": baseline,
        "feature_file_mib": round(feature_bytes / MB, 1), "float32_matrix_mib": round(2 * feature_bytes / MB, 1),
        "steps": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--labeled", type=float, default=0.01, help="fraction of images in seed folders")
    ap.add_argument("--scan-files", type=int, default=20_000, help="also scan this many real tiny PNGs (0: skip)")
    ap.add_argument("--no-train", action="store_true", help="skip the full round")
    ap.add_argument("--workdir", default=None, help="where to build the project (default: a temp dir)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scale_200k.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        result = run(args.images, n_classes=args.classes, labeled=args.labeled, workdir=Path(tmp),
                     scan_files=args.scan_files, train=not args.no_train)
    result["machine"] = {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    print(f"\n{result['images']} images, {result['feature_dim']}-d float16 features: "
          f"{result['feature_file_mib']} MiB on disk ({result['float32_matrix_mib']} MiB as float32)")
    base = result["baseline_after_imports"]
    print(f"after imports: RSS {base['rss_mib']} MiB, anonymous {base['anon_mib']} MiB (MiB below)")
    print(f"{'step':62s} {'seconds':>8s} {'peak RSS':>9s} {'peak anon':>10s} {'anon +':>8s}")
    for r in result["steps"]:
        print(f"{r['step']:62s} {r['seconds']:8.2f} {r['peak_rss_mib']:9.1f} {r['peak_anon_mib']:10.1f} "
              f"{r['anon_growth_mib']:8.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

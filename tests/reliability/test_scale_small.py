"""The scale benchmark in small (benchmarks/bench_scale_200k.py has the 200k version): synthetic
cached features for 10k images go through the store, the pool, kNN and propose, and the features
stay memory-mapped: no step allocates anything near the size of the feature matrix."""

from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labeltool.config import ProjectConfig, SuggestConfig
from labeltool.data.features import FeatureCache
from labeltool.data.project import open_project
from labeltool.data.store import Store
from labeltool.models.backbones import get_spec
from labeltool.session import LabelingSession
from labeltool.suggest import knn_cpu
from labeltool.suggest import propose as suggest
from labeltool.suggest.knn import knn_search
from labeltool.suggest.propose import propose

from sample_helpers import REPO

N, CLASSES, LABELED = 10_000, 10, 200


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_scale_200k", REPO / "benchmarks" / "bench_scale_200k.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peak_numpy_bytes(fn: Any) -> tuple[Any, int]:
    """``fn()`` and the peak of the memory it allocated through Python and numpy."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_10k_images_knn_and_propose_stay_memory_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         reliability_stats: dict[str, Any]) -> None:
    bench = _bench()
    root = tmp_path / "photos"
    root.mkdir()
    project = open_project(root, config=ProjectConfig())
    spec = get_spec(project.config.backbone)
    with Store(project.db_path) as st:
        st.ensure_classes([f"class{c:03d}" for c in range(CLASSES)])
        st.upsert_images(list(bench._rows(N, LABELED, CLASSES)), [r["relpath"] for r in bench._rows(N, LABELED, CLASSES)])
    bench._write_features(FeatureCache(project.embeddings_dir, spec.cache_key(), spec.feature_dim), N, CLASSES, LABELED, 0)
    matrix_f32 = N * spec.feature_dim * 4
    # small working blocks, so that anything proportional to N would stand out
    monkeypatch.setattr(knn_cpu, "_REFINE_ELEMS", 1 << 19)
    monkeypatch.setattr(suggest, "_CHUNK", 512)
    with LabelingSession(project) as s:
        pool = s.pool()
        assert len(pool) == N and isinstance(pool.features.matrix, np.memmap)
        labels = pool.labels(s.label_state().labels)
        assert (labels >= 0).sum() == LABELED and s.stats()["embedded"] == N
        mm = pool.features.matrix
        knn_search(mm[:50], np.asarray(mm[:LABELED]), 10)  # warm-up: faiss's first import is not the search
        (_, idx), knn_peak = _peak_numpy_bytes(
            lambda: knn_search(mm[LABELED:], np.asarray(mm[:LABELED]), 10, chunk_size=512))
        assert idx.shape == (N - LABELED, 10)
        rows, propose_peak = _peak_numpy_bytes(
            lambda: propose(mm, labels, pool.ids, SuggestConfig(batch_size=500, stratified=True)))
        assert len(rows) == 500 and len({r.image_id for r in rows}) == 500
        assert all(labels[r.image_id - 1] == -1 for r in rows)
    assert knn_peak < matrix_f32 / 4, (knn_peak, matrix_f32)  # the float16 matrix alone would be / 2
    assert propose_peak < matrix_f32 / 4, (propose_peak, matrix_f32)
    reliability_stats["scale_small"] = {"images": N, "float32_matrix_mib": round(matrix_f32 / 2**20, 1),
                                        "knn_peak_numpy_mib": round(knn_peak / 2**20, 1),
                                        "propose_peak_numpy_mib": round(propose_peak / 2**20, 1)}

"""The app's non-UI helpers: review queue, precision estimate, disputed labels, project location,
the per-thread store, projections and figures."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labeltool.data.decisions import Decision
from labeltool.data.store import StoredSuggestion
from labeltool.data.thread_store import ThreadLocalStore
from labeltool.data.user_dirs import resolve_project_dir
from labeltool.suggest.propose import Suggestion
from labeltool.ui.figures import (
    pca_2d,
    projection,
    projection_path,
    rounds_frame,
    sample_frame,
    save_projection,
    scatter_figure,
)
from labeltool.ui.queue import (
    PrecisionEstimate,
    batch_precision,
    disputed_labels,
    filter_sort,
    page_of,
    reviewed_outcomes,
    stated_vs_observed,
)


def _s(image_id: int, class_id: int, conf: float, rank: int = 0) -> Suggestion:
    return Suggestion(image_id, class_id, conf, "knn", None, (), rank)


def test_filter_sort_and_pages() -> None:
    rows = [_s(1, 0, 0.5, 2), _s(2, 1, 0.9, 0), _s(3, 0, 0.9, 1), _s(4, 1, 0.1, 3)]
    assert [s.image_id for s in filter_sort(rows)] == [2, 3, 1, 4]
    assert [s.image_id for s in filter_sort(rows, order="low first")] == [4, 1, 3, 2]
    # equal confidences keep propose's ranking, then go by image id
    tied = [_s(7, 0, 1.0, 0), _s(5, 0, 1.0, 1), _s(6, 0, 1.0, 1)]
    assert [s.image_id for s in filter_sort(tied)] == [7, 5, 6]
    assert [s.image_id for s in filter_sort(tied, order="low first")] == [5, 6, 7]
    assert [s.image_id for s in filter_sort(rows, class_id=0)] == [3, 1]
    assert [s.image_id for s in filter_sort(rows, order="rank")] == [2, 3, 1, 4]
    with pytest.raises(ValueError, match="order"):
        filter_sort(rows, order="sideways")
    assert page_of(list(range(10)), 1, 4) == ([4, 5, 6, 7], 3, 1)
    assert page_of(list(range(10)), 9, 4) == ([8, 9], 3, 2)  # clamped to the last page
    assert page_of([], 0, 4) == ([], 1, 0)


def _d(i: int, image_id: int, class_id: int | None, action: str, rnd: int | None = 1, undoes: int | None = None) -> Decision:
    return Decision(i, image_id, class_id, action, rnd, i, undoes, None, 0.0)


def test_reviewed_outcomes_and_calibrated_precision() -> None:
    sugg = {1: [StoredSuggestion(1, img, img % 2, 0.95 if img < 50 else 0.55, "knn", img, None, ()) for img in range(100)]}
    log = [_d(i + 1, i, i % 2, "accept" if i < 50 else "reject") for i in range(100)]
    log.append(_d(101, 0, None, "undo", None, undoes=1))  # an undone accept does not count
    log.append(_d(102, 7, 0, "reject"))  # a reject of another class than suggested does not count
    conf, acc = reviewed_outcomes(log, sugg)
    assert len(conf) == 99 and acc.sum() == 49
    raw = batch_precision([0.55, 0.55], conf[:5], acc[:5])
    assert raw.value == pytest.approx(0.55) and "mean confidence" in raw.basis
    cal = batch_precision([0.55, 0.55], conf, acc)
    assert cal.value == pytest.approx(0.0) and "calibrated" in cal.basis  # 0.5-0.6 was always rejected
    assert np.isnan(batch_precision([], conf, acc).value)


def test_disputed_labels_finds_the_odd_one() -> None:
    rng = np.random.default_rng(0)
    centers = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0]])
    x = np.concatenate([c + rng.normal(0, 0.5, (8, 2)) for c in centers]).astype(np.float32)
    labels = np.repeat(np.arange(3), 8)
    labels[3] = 2  # sits among class 0
    labels[20] = -1  # unlabeled rows take no part
    ids = np.arange(100, 124)
    found = disputed_labels(ids, x, labels, k=5, min_share=0.6, normalize=False)
    assert [(d.image_id, d.label, d.voted) for d in found] == [(103, 2, 0)]
    assert found[0].share == 1.0 and len(found[0].neighbours) == 5 and 103 not in found[0].neighbours
    assert disputed_labels(ids[:2], x[:2], labels[:2]) == []


def test_project_dir_for_protected_and_existing_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELTOOL_CACHE_DIR", str(tmp_path / "cache"))
    sample = tmp_path / "repo" / "sample_data"
    (sample / "cats").mkdir(parents=True)
    pdir = resolve_project_dir(sample, None, protected=[sample])
    assert pdir is not None and pdir.parent == tmp_path / "cache" / "projects" and pdir.name.startswith("sample_data-")
    assert pdir == resolve_project_dir(sample, None, protected=[sample])  # stable
    assert resolve_project_dir(sample / "cats", None, protected=[sample]) != pdir
    assert resolve_project_dir(tmp_path / "elsewhere", None, protected=[sample]) is None
    (sample / ".labeltool").mkdir()
    (sample / ".labeltool" / "project.json").write_text("{}")
    assert resolve_project_dir(sample, None, protected=[sample]) is None  # an existing project is reused
    assert resolve_project_dir(sample, tmp_path / "mine", protected=[sample]) == tmp_path / "mine"


def test_thread_local_store_works_from_other_threads(tmp_path: Path) -> None:
    store = ThreadLocalStore(tmp_path / "p.sqlite")
    store.ensure_classes(["a", "b"])
    seen: list[list[str]] = []
    t = threading.Thread(target=lambda: seen.append(store.classes()))
    t.start()
    t.join()
    assert seen == [["a", "b"]]
    store.close()


def test_projection_pca_now_umap_when_cached(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    ids = np.arange(40)
    p = projection(tmp_path, "round-1", ids, x, start_umap=False)
    assert p.method == "pca" and p.xy.shape == (40, 2)
    assert np.allclose(np.abs(pca_2d(x)), np.abs(p.xy), atol=1e-4)
    fake = rng.normal(size=(40, 2)).astype(np.float32)
    save_projection(projection_path(tmp_path, "round-1", "umap"), ids, fake)
    q = projection(tmp_path, "round-1", ids, x, start_umap=False)
    assert q.method == "umap" and np.array_equal(q.xy, fake)
    assert projection(tmp_path, "round-1", ids[:-1], x[:-1], start_umap=False).method == "pca"  # stale cache


def test_figures_sample_large_pools_and_use_webgl() -> None:
    n = 3000
    df = pd.DataFrame({
        "image_id": np.arange(n), "x": np.random.default_rng(0).normal(size=n), "y": np.zeros(n),
        "label": ["unlabeled"] * (n - 100) + ["a", "b"] * 50, "source": ["unlabeled"] * (n - 100) + ["seed"] * 100,
        "confidence": np.linspace(0, 1, n), "labeled": [False] * (n - 100) + [True] * 100,
    })
    small = sample_frame(df, 500)
    assert len(small) == 500 and small["labeled"].sum() == 100
    for color in ("label", "source", "confidence"):
        fig = scatter_figure(df, color, max_points=500)
        assert all(t.type == "scattergl" for t in fig.data)
        assert sum(len(t.x) for t in fig.data) == 500

    class R:
        def __init__(self, i: int, m: dict) -> None:
            self.id, self.metrics = i, m

    frame = rounds_frame([R(1, {"n_labeled": 50, "review": {"acceptance_rate": None}}), R(2, {}),
                          R(3, {"n_labeled": 90, "loo_1nn_accuracy": 0.9, "review": {"acceptance_rate": 0.8}})])
    assert frame["round"].tolist() == [1, 3] and frame["n_labeled"].tolist() == [50.0, 90.0]


def test_precision_text_and_stated_vs_observed() -> None:
    assert PrecisionEstimate(0.93, "b", 0.88, 0.96).text() == "0.93 [0.88, 0.96]"
    assert PrecisionEstimate(0.9, "b").text() == "≈ 0.90 (uncalibrated)"
    log = [Decision(1, 10, 0, "accept", 1, 1, None, 0.9, 1.0), Decision(2, 11, 1, "reject", 1, 2, None, 0.8, 2.0)]
    sugg = {1: [StoredSuggestion(1, 10, 0, 0.9, "knn", 0, None, ()), StoredSuggestion(1, 11, 1, 0.8, "knn", 1, None, ())]}
    rows = stated_vs_observed({1: {"value": 0.9, "low": 0.8, "high": 0.95}, 2: {"value": 0.7}}, log, sugg)
    assert [(r.round, r.reviewed, r.accepted) for r in rows] == [(1, 2, 1), (2, 0, 0)]
    assert rows[0].observed == 0.5 and math.isnan(rows[1].observed) and math.isnan(rows[1].low)

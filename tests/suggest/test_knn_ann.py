"""The approximate index and the switch to it, and the exact CPU search's rounding certificate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from labeltool.config import SuggestConfig
from labeltool.suggest import ann, propose
from labeltool.suggest.ann import ApproxIndex, build_index
from labeltool.suggest.knn import ExactIndex, knn_search
from labeltool.suggest.knn_cpu import CpuExact


def mixture(n: int, dim: int = 16, classes: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit rows around ``classes`` centres, and their classes."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, n)
    x = centres[y] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approx_index_recall_and_exact_distances(kind: str) -> None:
    x, _ = mixture(1200)
    base, q = x[:1000], x[1000:]
    index = ApproxIndex(base, kind=kind)
    assert index.approximate and index.kind == kind and index.calibration == {}
    d, i = index.search(q, 5, chunk_size=64)
    assert index.kind == kind and index.calibration["recall_at_1"] >= ann.TARGET_RECALL
    assert index.calibration["sample"] == 64  # the first chunk
    ed, ei = knn_search(q, base, 5)
    assert d.dtype == np.float32 and i.dtype == np.int64 and d.shape == i.shape == (200, 5)
    assert (i[:, 0] == ei[:, 0]).mean() >= 0.97
    # distances are those of the returned rows, computed as exact search computes them
    want = ((q[:, None, :] - base[i]) ** 2).sum(-1)
    np.testing.assert_allclose(d, want, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(d, axis=1) >= 0)


def test_approx_index_fills_short_rows_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = mixture(600)
    index = ApproxIndex(x[:500], kind="ivf")
    index.search(x[500:], 4)  # calibrated
    real = index._index

    class Short:
        def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            d, i = real.search(q, k)
            i[::3, -1] = -1  # as IVF answers when the probed lists hold fewer than k rows
            return d, i

    monkeypatch.setattr(index, "_index", Short())
    d, i = index.search(x[500:], 4)
    ed, ei = knn_search(x[500:], x[:500], 4)
    np.testing.assert_array_equal(i[::3], ei[::3])
    assert (i >= 0).all()


def test_hnsw_that_misses_the_target_becomes_ivf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "_HNSW_EF", (1,))
    x, _ = mixture(700, classes=30)
    index = ApproxIndex(x[:600], kind="hnsw", target_recall=1.0)
    assert index.kind == "hnsw"
    d, i = index.search(x[600:], 3)
    assert index.kind == "ivf" and "nprobe" in index.calibration
    np.testing.assert_array_equal(i[:, 0], knn_search(x[600:], x[:600], 1)[1][:, 0])


def test_kind_chosen_by_size() -> None:
    assert ann.choose_kind(100_000, None) == "ivf"
    assert ann.choose_kind(100_000, 200_000) == "ivf"
    assert ann.choose_kind(100_000, 300_000) == "hnsw"


def test_build_index_switch() -> None:
    x, _ = mixture(400)
    base, q = x[:300], x[300:]
    below = build_index(base, approximate_from=301)
    assert isinstance(below, ExactIndex) and not below.approximate
    for got, want in zip(below.search(q, 6), knn_search(q, base, 6), strict=True):
        np.testing.assert_array_equal(got, want)
    assert isinstance(build_index(base, approximate_from=None), ExactIndex)
    assert isinstance(build_index(base, approximate_from=300, backend="numpy"), ExactIndex)
    assert isinstance(build_index(base, approximate_from=300), ApproxIndex)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kind": "annoy"}, "kind"), ({"target_recall": 0.0}, "target_recall"), ({"chunk_size": 0}, "chunk_size")],
)
def test_approx_index_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ApproxIndex(np.zeros((10, 2), np.float32), **kwargs)
    with pytest.raises(ValueError, match="at least 2"):
        ApproxIndex(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="approximate_from"):
        build_index(np.zeros((10, 2), np.float32), approximate_from=0)
    with pytest.raises(ValueError, match="approximate_from"):
        SuggestConfig(approximate_from=0)


def _round(n: int = 800, labeled: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = mixture(n, classes=6, seed=3)
    labels = np.full(n, -1, dtype=np.int64)
    labels[:labeled] = y[:labeled]
    return x, labels, np.arange(n, dtype=np.int64) * 7 + 3


def test_suggestions_identical_to_exact_below_threshold_and_approximate_above(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emb, labels, ids = _round()
    built: list[bool] = []
    searched: list[int] = []
    real_build, real_search = ann.build_index, ApproxIndex.search

    def spy_build(*args: object, **kwargs: object) -> object:
        index = real_build(*args, **kwargs)  # type: ignore[arg-type]
        built.append(index.approximate)
        return index

    def spy_search(self: ApproxIndex, q: np.ndarray, k: int, **kw: object) -> tuple[np.ndarray, np.ndarray]:
        searched.append(q.shape[0])
        return real_search(self, q, k, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("labeltool.suggest.sources.knn.build_index", spy_build)
    monkeypatch.setattr(ApproxIndex, "search", spy_search)
    monkeypatch.setattr(propose, "_CHUNK", 128)  # several query chunks per round
    cfg = SuggestConfig(batch_size=None, calibration_folds=0)
    exact = propose.propose(emb, labels, ids, dataclasses.replace(cfg, approximate_from=None))
    default = propose.propose(emb, labels, ids, cfg)  # 300 labeled, far below the default threshold
    at_300 = propose.propose(emb, labels, ids, dataclasses.replace(cfg, approximate_from=301))
    assert built == [False, False, False] and searched == []
    assert default == exact and at_300 == exact
    approx = propose.propose(emb, labels, ids, dataclasses.replace(cfg, approximate_from=300))
    assert built[-1] is True  # one index for the round ...
    assert len(built) == 4 and sum(searched) == 500 and len(searched) == 4  # ... searched chunk by chunk
    same = {(s.image_id, s.class_id) for s in approx} & {(s.image_id, s.class_id) for s in exact}
    assert len(same) >= 0.95 * len(exact)


def test_certificate_bounds_the_rounding() -> None:
    rng = np.random.default_rng(5)
    base = (rng.standard_normal((700, 24)) * rng.uniform(0.1, 30, (700, 1))).astype(np.float32)
    q = (rng.standard_normal((300, 24)) * 10).astype(np.float32)
    index = CpuExact(base, use_faiss=False)
    d_approx, idx = index.candidates(q, 40)
    real = ((q.astype(np.float64)[:, None, :] - base.astype(np.float64)[idx]) ** 2).sum(-1)
    bound = index.error_bound((q.astype(np.float64) ** 2).sum(1))
    assert (np.abs(d_approx - real) <= bound[:, None]).all()
    assert (bound > 0).all() and (bound < 1e-2 * real.min(1)).all()


@pytest.mark.parametrize("use_faiss", [True, False])
def test_ties_at_the_kth_place_are_searched_again(use_faiss: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    base = np.repeat(np.eye(3, dtype=np.float32), 12, axis=0)  # 12 copies of each of 3 points
    q = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 1.0]], np.float32)
    fetched: list[int] = []
    real = CpuExact.candidates

    def spy(self: CpuExact, qq: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        fetched.append(m)
        return real(self, qq, m)

    monkeypatch.setattr(CpuExact, "candidates", spy)
    d, i = CpuExact(base, use_faiss=use_faiss).search(q, 5)
    np.testing.assert_array_equal(i, [[0, 1, 2, 3, 4], [24, 25, 26, 27, 28]])
    assert fetched[0] == 6 and len(fetched) > 1  # the k+1 first candidates could not prove the order
    np.testing.assert_array_equal(d[1], 0.0)


def test_ivf_that_must_probe_many_lists_answers_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "_MAX_PROBED_SHARE", 0.0)
    x, _ = mixture(700)
    index = ApproxIndex(x[:600], kind="ivf")
    d, i = index.search(x[600:], 4)
    assert index.exact_instead and index.calibration["exact_instead"]
    for got, want in zip((d, i), knn_search(x[600:], x[:600], 4), strict=True):
        np.testing.assert_array_equal(got, want)


def test_small_query_blocks_use_the_product_path() -> None:
    import faiss

    from labeltool.suggest import knn_cpu

    before = faiss.cvar.distance_compute_blas_threshold
    with knn_cpu._faiss_blocks(65):
        assert faiss.cvar.distance_compute_blas_threshold == knn_cpu._FAISS_BLAS_FROM_ROWS * 65
    assert faiss.cvar.distance_compute_blas_threshold == before  # restored

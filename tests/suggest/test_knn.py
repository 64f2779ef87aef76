"""kNN backends against a float64 numpy brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from labeltool.suggest import knn, knn_cpu
from labeltool.suggest.knn import available_backends, knn_search, resolve_backend

BACKENDS = available_backends()
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def brute_force(q: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: float64 squared distances, stable argsort (ties by index)."""
    d = ((q.astype(np.float64)[:, None, :] - b.astype(np.float64)[None, :, :]) ** 2).sum(-1)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


def assert_matches(got: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> None:
    gd, gi = got
    rd, ri = ref
    assert gd.dtype == np.float32 and gi.dtype == np.int64
    assert gd.shape == rd.shape and gi.shape == ri.shape
    np.testing.assert_allclose(gd, rd, rtol=1e-5, atol=1e-4)
    assert np.all(np.diff(gd, axis=1) >= 0), "distances must be ascending"
    # indices must agree wherever the reference distance is not tied with a neighbour's
    gap = np.full(rd.shape, np.inf)
    diffs = np.diff(rd, axis=1)
    gap[:, 1:] = np.minimum(gap[:, 1:], diffs)
    gap[:, :-1] = np.minimum(gap[:, :-1], diffs)
    untied = gap > 1e-3
    assert untied.mean() > 0.9
    np.testing.assert_array_equal(gi[untied], ri[untied])


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(500, 16)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_brute_force(backend: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    q, b = data
    assert_matches(knn_search(q, b, 7, backend=backend, chunk_size=64), brute_force(q, b, 7))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_float16_and_small_blocks(
    backend: str, data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    q, b = (x.astype(np.float16) for x in data)
    # tiny blocks force the running top-k merge over base blocks and several refine steps
    monkeypatch.setattr(knn_cpu, "_NUMPY_BLOCK", 256)
    monkeypatch.setattr(knn, "_TORCH_BLOCK", 256)
    monkeypatch.setattr(knn_cpu, "_REFINE_ELEMS", 1000)
    monkeypatch.setattr(knn, "_TORCH_REFINE_ELEMS", 1000)
    assert_matches(knn_search(q, b, 5, backend=backend, chunk_size=50), brute_force(q, b, 5))


def test_all_backends_agree(data: tuple[np.ndarray, np.ndarray]) -> None:
    q, b = data
    b = np.concatenate([b, b[:50]])  # exact duplicates: tied distances ordered by index everywhere
    results = [knn_search(q, b, 9, backend=name) for name in BACKENDS]
    for d, i in results[1:]:
        np.testing.assert_allclose(d, results[0][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(i, results[0][1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_have_zero_distance_and_index_order(backend: str) -> None:
    b = np.array([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0], [5.0, 5.0]], dtype=np.float32)
    q = np.array([[1.0, 2.0]], dtype=np.float32)
    d, i = knn_search(q, b, 3, backend=backend)
    np.testing.assert_array_equal(i, [[0, 2, 1]])
    np.testing.assert_array_equal(d[0, :2], [0.0, 0.0])
    assert d[0, 2] == pytest.approx(5.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_memmap_queries_and_base(backend: str, tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    q, b = data
    qm = np.lib.format.open_memmap(tmp_path / "q.npy", mode="w+", dtype=np.float16, shape=q.shape)
    qm[:] = q
    bm = np.lib.format.open_memmap(tmp_path / "b.npy", mode="w+", dtype=np.float32, shape=b.shape)
    bm[:] = b
    qm.flush()
    bm.flush()
    qm = np.load(tmp_path / "q.npy", mmap_mode="r")
    bm = np.load(tmp_path / "b.npy", mmap_mode="r")
    assert isinstance(qm, np.memmap)
    assert_matches(knn_search(qm, bm, 4, backend=backend, chunk_size=37), brute_force(np.asarray(qm), b, 4))


def test_memmap_queries_converted_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    orig = knn._as_f32

    def spy(block: np.ndarray, name: str, start: int) -> np.ndarray:
        if name == "queries":
            seen.append(block.shape[0])
        return orig(block, name, start)

    monkeypatch.setattr(knn, "_as_f32", spy)
    q = np.zeros((100, 3), dtype=np.float16)
    knn_search(q, np.ones((4, 3), dtype=np.float32), 2, backend="numpy", chunk_size=30)
    assert seen == [30, 30, 30, 10]


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_larger_than_base(backend: str) -> None:
    rng = np.random.default_rng(1)
    q, b = rng.normal(size=(10, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    d, i = knn_search(q, b, 10, backend=backend)
    assert d.shape == i.shape == (10, 3)
    assert_matches((d, i), brute_force(q, b, 3))
    np.testing.assert_array_equal(np.sort(i, axis=1), np.tile([0, 1, 2], (10, 1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_inputs(backend: str) -> None:
    b = np.ones((5, 3), dtype=np.float32)
    d, i = knn_search(np.zeros((0, 3), dtype=np.float32), b, 2, backend=backend)
    assert d.shape == i.shape == (0, 2) and d.dtype == np.float32 and i.dtype == np.int64
    d, i = knn_search(
        np.zeros((4, 3), dtype=np.float32), np.zeros((0, 3), dtype=np.float32), 2, backend=backend
    )
    assert d.shape == i.shape == (4, 0)
    d, i = knn_search(
        np.zeros((0, 3), dtype=np.float32), np.zeros((0, 3), dtype=np.float32), 1, backend=backend
    )
    assert d.shape == (0, 0)


@pytest.mark.parametrize(
    ("q", "b", "k", "match"),
    [
        (np.zeros(3, np.float32), np.zeros((2, 3), np.float32), 1, "2-D"),
        (np.zeros((2, 3), np.float32), np.zeros((2, 3, 1), np.float32), 1, "2-D"),
        (np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32), 1, "same dimension"),
        (np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), 0, "k must be"),
        (np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), True, "k must be"),
        (np.array([[0.0, np.nan, 0.0]], np.float32), np.zeros((2, 3), np.float32), 1, "NaN"),
        (np.zeros((2, 3), np.float32), np.array([[0.0, 0.0, np.inf]], np.float32), 1, "NaN or infinite"),
        (np.zeros((0, 3), np.float32), np.array([[0.0, 0.0, np.nan]], np.float32), 1, "base contains"),
        (np.array([[np.nan, 0, 0]], np.float32), np.zeros((0, 3), np.float32), 1, "queries contains"),
        (np.zeros((2, 3), np.complex64), np.zeros((2, 3), np.float32), 1, "real numbers"),
        ([[0.0, 1.0]], np.zeros((2, 2), np.float32), 1, "numpy array"),
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_bad_input_raises(q: np.ndarray, b: np.ndarray, k: int, match: str, backend: str) -> None:
    with pytest.raises(ValueError, match=match):
        knn_search(q, b, k, backend=backend)


def test_nan_in_later_query_chunk_names_the_row() -> None:
    q = np.zeros((10, 2), np.float32)
    q[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        knn_search(q, np.zeros((3, 2), np.float32), 1, backend="numpy", chunk_size=3)


def test_resolve_backend() -> None:
    assert resolve_backend("auto") == BACKENDS[0]
    assert BACKENDS[-1] == "numpy"
    assert set(BACKENDS) <= set(knn.BACKENDS)
    assert [b for b in knn.BACKENDS if b in BACKENDS] == BACKENDS  # preference order kept
    for name in BACKENDS:
        assert resolve_backend(name) == name
    with pytest.raises(ValueError, match="valid"):
        resolve_backend("annoy")
    for name in set(knn.BACKENDS) - set(BACKENDS):
        with pytest.raises(ValueError, match="available"):
            resolve_backend(name)
    assert ("torch-cuda" in BACKENDS) == torch.cuda.is_available()


@pytest.mark.gpu
@CUDA
def test_torch_cuda_ignores_tf32_setting(data: tuple[np.ndarray, np.ndarray]) -> None:
    q, b = data
    old = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        got = knn_search(q * 100, b * 100, 6, backend="torch-cuda")
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"  # restored
    finally:
        torch.backends.cuda.matmul.fp32_precision = old
    ref = brute_force(q * 100, b * 100, 6)
    np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.gpu
@CUDA
def test_torch_cuda_large_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    q = rng.normal(size=(20000, 64)).astype(np.float32)
    b = rng.normal(size=(30000, 64)).astype(np.float32)
    gd, gi = knn_search(q, b, 10, backend="torch-cuda", chunk_size=8192)
    nd, ni = knn_search(q, b, 10, backend="numpy")
    np.testing.assert_allclose(gd, nd, rtol=1e-5, atol=1e-5)
    assert (gi == ni).mean() > 0.999

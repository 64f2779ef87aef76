"""2-D layouts of an embedding for the Explore view: PCA, and a UMAP that follows each round.

UMAP of every point takes minutes at 100k points on a 2-core CPU (benchmarks/README.md §3), so
beyond :data:`SAMPLE_SIZE` points UMAP lays out a sample only, the same images every round (the
smallest hashes of their ids, :func:`sample_rows`), and every other point is placed among its
nearest sample points in the embedding (:func:`place`). Projects up to that size get UMAP of all
their points. When the previous layout is given (``init``), the fit starts from it: the picture
stays where the user saw it last, and fewer epochs do.

Neighbours come from a faiss flat index (exact) and reach umap as ``precomputed_knn``: umap's own
search (pynndescent's NN-descent, used from 4096 points) is a numba function that cannot be
cached on disk, so every new process compiled it again for a minute or more, and each round's
layout runs in a new process. umap's other compiled functions are cached on disk
(:func:`enable_numba_cache`).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

SAMPLE_SIZE = 5000  # points UMAP lays out; the rest are placed (benchmarks/bench_projection.py)
N_NEIGHBORS = 15
PLACE_K = 10  # sample neighbours a placed point is put among
SAMPLE_EPOCHS = 200  # a sample's fit from scratch: umap's own default above 10k points
WARM_EPOCHS = 100  # a fit that starts from the previous layout
MIN_KNOWN = 0.5  # share of the fitted points the previous layout must cover to start from it
_PLACE_CHUNK = 16384  # rows placed at a time (memory: rows x k x k floats)
_HASH = np.uint64(0x9E3779B97F4A7C15)  # odd, so multiplying by it permutes the 64-bit ids


def pca_2d(x: np.ndarray) -> np.ndarray:
    """First two principal components of ``x [N, D]`` (zeros where there is nothing to project)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        return np.zeros((x.shape[0] if x.ndim else 0, 2), dtype=np.float32)
    x = x - x.mean(axis=0)
    vals, vecs = np.linalg.eigh(x.T @ x)
    top = vecs[:, ::-1][:, :2]
    if top.shape[1] < 2:
        top = np.pad(top, ((0, 0), (0, 2 - top.shape[1])))
    # fix the sign so the picture does not flip between runs
    signs = np.sign(top[np.abs(top).argmax(axis=0), [0, 1]])
    return (x @ (top * np.where(signs == 0, 1, signs))).astype(np.float32)


def sample_rows(ids: np.ndarray, size: int) -> np.ndarray:
    """Ascending row indices ``[min(size, N)]`` of the ``size`` ids of ``ids [N]`` with the
    smallest hash: the same images every round, and a new image enters only in place of one."""
    h = np.asarray(ids).astype(np.uint64) * _HASH  # wraps around: a fixed permutation of the ids
    return np.sort(np.argsort(h, kind="stable")[:size])


def nearest(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest rows of ``base [M, D]`` for each of ``queries [Q, D]``: Euclidean
    distances ``[Q, k']`` (ascending) and indices ``[Q, k']`` (int64), ``k' = min(k, M)``.

    faiss directly rather than :func:`labeltool.suggest.knn.knn_search`, whose backend choice
    imports torch: seconds of a layout that should take few."""
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    d2, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, base.shape[0]))
    return np.sqrt(np.maximum(d2, 0)).astype(np.float32), idx.astype(np.int64)


def place(base_xy: np.ndarray, dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """2-D positions ``[Q, 2]`` of points whose nearest laid-out points are ``idx [Q, k]`` (rows of
    ``base_xy [M, 2]``) at embedding distances ``dist [Q, k]``.

    With weights ``1 / distance``, each point goes to the weighted mean of those neighbours that
    lie near their weighted 2-D medoid (no farther from it than the median neighbour). A plain
    mean puts a point whose neighbours UMAP drew in two clusters between both, in neither."""
    out = np.empty((idx.shape[0], 2), dtype=np.float32)
    for start in range(0, idx.shape[0], _PLACE_CHUNK):
        p = base_xy[idx[start:start + _PLACE_CHUNK]].astype(np.float32)  # [q, k, 2]
        w = 1.0 / (dist[start:start + _PLACE_CHUNK] + 1e-3)  # [q, k]
        pair = np.linalg.norm(p[:, :, None, :] - p[:, None, :, :], axis=-1)  # [q, k, k]
        medoid = p[np.arange(len(p)), (pair * w[:, None, :]).sum(axis=2).argmin(axis=1)]  # [q, 2]
        r = np.linalg.norm(p - medoid[:, None, :], axis=-1)  # [q, k]
        w = w * (r <= np.median(r, axis=1, keepdims=True))
        out[start:start + len(p)] = (p * w[..., None]).sum(axis=1) / w.sum(axis=1, keepdims=True)
    return out


_CACHED: set[int] = set()


def enable_numba_cache() -> int:
    """Turn on numba's disk cache for umap's and pynndescent's compiled functions that lack it
    (umap compiles them anew in every process otherwise: tens of seconds). Returns how many.

    The cache lies beside their sources (numba's ``__pycache__``) or, where that is read-only,
    in numba's per-user cache folder; ``NUMBA_CACHE_DIR`` moves it."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    turned = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith(("umap", "pynndescent")) or id(module) in _CACHED:
            continue
        _CACHED.add(id(module))
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(getattr(value, "_cache", None), NullCache):
                value.enable_caching()
                turned += 1
    return turned


def fit_umap(x: np.ndarray, *, seed: int = 0, n_neighbors: int = N_NEIGHBORS, min_dist: float = 0.1,
             init: np.ndarray | None = None, n_epochs: int | None = None) -> np.ndarray:
    """UMAP of ``x [S, D]`` to ``[S, 2]`` on its exact neighbours, from ``init [S, 2]`` when given
    (else umap's spectral start); ``n_epochs`` None: umap's default. Deterministic for a seed."""
    try:
        import umap
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "the UMAP view needs the umap-learn package: pip install umap-learn (PCA is shown meanwhile)"
        ) from e
    enable_numba_cache()
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = min(n_neighbors, x.shape[0] - 1)
    dist, idx = nearest(x, x, k)
    reducer: Any = umap.UMAP(
        n_neighbors=k, min_dist=min_dist, random_state=seed, n_jobs=1, n_epochs=n_epochs,
        init="spectral" if init is None else np.asarray(init, dtype=np.float32),
        precomputed_knn=(idx.astype(np.int32), dist),
    )
    with warnings.catch_warnings():  # no search index kept (nothing is transformed later); one thread
        warnings.filterwarnings("ignore", message=r"(?s).*(knn_search_index|n_jobs value)")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def warm_start(x: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
    """Start layout ``[S, 2]`` for ``x [S, D]`` from the previous layout of the same rows
    ``previous [S, 2]`` (NaN rows: not laid out before, placed among those that were), or None
    when it covers fewer than :data:`MIN_KNOWN` of the rows."""
    if previous is None:
        return None
    known = np.isfinite(previous).all(axis=1)
    if known.sum() < max(MIN_KNOWN * len(x), 2):
        return None
    start = np.array(previous, dtype=np.float32)
    if not known.all():
        dist, idx = nearest(x[known], x[~known], PLACE_K)
        start[~known] = place(start[known], dist, idx)
    return start


def prepare_umap() -> None:
    """Import umap and load its compiled functions (a layout of 64 random points): what a new
    process spends seconds on before its first layout."""
    umap_2d(np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))


def umap_2d(x: np.ndarray, *, seed: int = 0, ids: np.ndarray | None = None, init: np.ndarray | None = None,
            n_neighbors: int = N_NEIGHBORS, min_dist: float = 0.1, sample_size: int = SAMPLE_SIZE) -> np.ndarray:
    """The Explore view's UMAP of ``x [N, D]``: ``[N, 2]``, deterministic for a seed.

    Up to ``sample_size`` points, UMAP of all; beyond, UMAP of the sample of ``ids [N]`` (default:
    row numbers) that :func:`sample_rows` picks, the other points placed among their
    :data:`PLACE_K` nearest sample points. ``init [N, 2]`` is the previous layout (NaN rows where
    it has none); when it covers enough of the fitted points, the fit starts from it."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if init is not None and np.shape(init) != (n, 2):
        raise ValueError(f"init must be [N, 2] = [{n}, 2] for x {x.shape}, got {np.shape(init)}")
    if n < 5:
        return pca_2d(x)
    rows = sample_rows(np.arange(n) if ids is None else ids, sample_size) if n > sample_size else np.arange(n)
    start = warm_start(x[rows], None if init is None else np.asarray(init, np.float32)[rows])
    epochs = WARM_EPOCHS if start is not None else (SAMPLE_EPOCHS if n > sample_size else None)
    fitted = fit_umap(x[rows], seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, init=start, n_epochs=epochs)
    if len(rows) == n:
        return fitted
    out = np.empty((n, 2), dtype=np.float32)
    rest = np.setdiff1d(np.arange(n), rows, assume_unique=True)
    dist, idx = nearest(x[rows], x[rest], PLACE_K)
    out[rows], out[rest] = fitted, place(fitted, dist, idx)
    return out

"""Exact k-nearest-neighbour search under squared Euclidean distance, with several backends.

Backends, in order of preference:

- ``"faiss-gpu"``: faiss ``GpuIndexFlatL2`` (only when the installed faiss has GPU support and sees
  a GPU; the CPU wheel simply does not offer it);
- ``"torch-cuda"``: exact fp32 ``matmul`` distances + ``topk`` on the GPU, in chunks;
- ``"faiss-cpu"``: faiss ``IndexFlatL2`` (OpenMP threads left at faiss's default);
- ``"numpy"``: brute force in chunks, always available.

Every backend returns the same neighbours up to ties: candidates are found with the usual
``|q|² + |b|² − 2 q·b`` expansion, then the distances of the ``k`` candidates are recomputed exactly
as ``Σ (q − b)²`` in fp32 and the rows are sorted by ``(distance, index)``. So distances of
identical pairs are exactly 0 and equal distances are ordered by base index on every backend.

Queries may be a ``np.memmap``: they are converted to float32 one chunk at a time, never as a
whole. faiss and torch are imported on first use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import numpy as np

BACKENDS: tuple[str, ...] = ("faiss-gpu", "torch-cuda", "faiss-cpu", "numpy")

# Distance blocks are bounded to about this many elements (queries x base rows).
_NUMPY_BLOCK = 1 << 22
_TORCH_BLOCK = 1 << 26
# Rows per exact re-ranking step (rows x k x D floats).
_REFINE_ELEMS = 1 << 24
# faiss's GPU flat index supports at most this many neighbours per query.
_FAISS_GPU_MAX_K = 2048

Searcher = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _faiss() -> Any | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _faiss_gpu_ok() -> bool:
    faiss = _faiss()
    if faiss is None or not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return int(faiss.get_num_gpus()) > 0
    except Exception:  # noqa: BLE001 - a broken GPU runtime simply means "not available"
        return False


def _torch_cuda_ok() -> bool:
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


@lru_cache(maxsize=1)
def available_backends() -> list[str]:
    """The backends usable in this process, in preference order (``"numpy"`` is always last)."""
    found: list[str] = []
    if _faiss_gpu_ok():
        found.append("faiss-gpu")
    if _torch_cuda_ok():
        found.append("torch-cuda")
    if _faiss() is not None:
        found.append("faiss-cpu")
    found.append("numpy")
    return found


def resolve_backend(name: str = "auto") -> str:
    """Return the backend to use: ``"auto"`` gives the first available one.

    Raises ``ValueError`` for an unknown name (listing the valid ones) or for a known backend that
    is not usable here (listing the available ones).
    """
    avail = available_backends()
    if name == "auto":
        return avail[0]
    if name not in BACKENDS:
        raise ValueError(f"unknown kNN backend {name!r}; valid: {['auto', *BACKENDS]}")
    if name not in avail:
        hint = ""
        if name == "faiss-gpu":
            hint = " (needs a faiss build with GPU support and a visible GPU)"
        elif name == "torch-cuda":
            hint = " (needs torch with CUDA and a visible GPU)"
        elif name == "faiss-cpu":
            hint = " (pip install faiss-cpu)"
        raise ValueError(f"kNN backend {name!r} is not available{hint}; available: {avail}")
    return name


def _check_matrix(x: np.ndarray, name: str) -> None:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, dim], got shape {x.shape}")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers (float16/float32), got dtype {x.dtype}")


def _as_f32(block: np.ndarray, name: str, start: int) -> np.ndarray:
    """``block`` as C-contiguous float32, raising ``ValueError`` on NaN/inf."""
    out = np.ascontiguousarray(block, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        bad = start + int(np.argwhere(~finite)[0][0])
        raise ValueError(f"{name} contains NaN or infinite values (first at row {bad})")
    return out


def _chunks(x: np.ndarray, size: int, name: str) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, float32 block)`` over the rows of ``x``, ``size`` rows at a time."""
    for s in range(0, x.shape[0], size):
        yield s, _as_f32(x[s : s + size], name, s)


def _load_all(x: np.ndarray, size: int, name: str) -> np.ndarray:
    """The whole of ``x`` as one float32 array, converted chunk by chunk."""
    out = np.empty(x.shape, dtype=np.float32)
    for s, block in _chunks(x, size, name):
        out[s : s + block.shape[0]] = block
    return out


def knn_search(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    *,
    backend: str = "auto",
    chunk_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every query row among the base rows.

    Args:
        queries: ``[Q, D]`` float16/float32 (may be a ``np.memmap``; read ``chunk_size`` rows at a time).
        base: ``[N, D]`` float16/float32.
        k: neighbours per query, ``>= 1``; ``k' = min(k, N)`` are returned.
        backend: ``"auto"`` or one of :data:`BACKENDS` (see :func:`resolve_backend`).
        chunk_size: query rows converted and searched at a time.

    Returns:
        ``(distances [Q, k'] float32, indices [Q, k'] int64)``: squared Euclidean distances in
        ascending order (ties ordered by index) and row indices into ``base``.

    Raises:
        ValueError: non-2-D inputs, mismatched dimensions, NaN/inf values, ``k < 1``.
    """
    _check_matrix(queries, "queries")
    _check_matrix(base, "base")
    if queries.shape[1] != base.shape[1]:
        raise ValueError(
            f"queries and base must have the same dimension, got {queries.shape[1]} and {base.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    name = resolve_backend(backend)
    q_rows, n_rows = queries.shape[0], base.shape[0]
    kk = min(int(k), n_rows)
    dist_out = np.empty((q_rows, kk), dtype=np.float32)
    idx_out = np.empty((q_rows, kk), dtype=np.int64)
    if n_rows == 0:
        # Still validate the queries, so bad input never passes silently.
        for _ in _chunks(queries, chunk_size, "queries"):
            pass
        return dist_out, idx_out
    if q_rows == 0:
        _load_all(base, chunk_size, "base")
        return dist_out, idx_out
    # A few extra candidates go into the exact re-ranking, so near-ties and exact ties at the k-th
    # place resolve the same way (by index) on every backend.
    fetch = min(n_rows, kk + _extra_candidates(kk))
    if name == "faiss-gpu" and fetch > _FAISS_GPU_MAX_K:
        name = "faiss-cpu"
    searcher = _make_searcher(name, base, chunk_size)
    for s, q in _chunks(queries, chunk_size, "queries"):
        d, i = searcher(q, fetch)
        d, i = d[:, :kk], i[:, :kk]
        dist_out[s : s + q.shape[0]] = d
        idx_out[s : s + q.shape[0]] = i
    return dist_out, idx_out


def _extra_candidates(k: int) -> int:
    """How many candidates beyond ``k`` are re-ranked exactly."""
    return 8 + k // 4


# --- CPU backends --------------------------------------------------------------------------------


def _refine(
    q: np.ndarray, idx: np.ndarray, k: int, gather: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances of the candidates ``idx [q, m]``, sorted by (distance, index), first ``k``.

    ``gather(idx_block [r, m])`` returns the candidate rows as float32 ``[r, m, D]``.
    """
    rows, m = idx.shape
    dist = np.empty((rows, m), dtype=np.float32)
    step = max(1, _REFINE_ELEMS // max(1, m * q.shape[1]))
    for s in range(0, rows, step):
        diff = gather(idx[s : s + step]) - q[s : s + step, None, :]
        dist[s : s + step] = np.einsum("rmd,rmd->rm", diff, diff)
    order = np.lexsort((idx, dist), axis=-1)[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def _make_searcher(name: str, base: np.ndarray, chunk_size: int) -> Searcher:
    if name == "numpy":
        return _numpy_searcher(_load_all(base, chunk_size, "base"))
    if name == "torch-cuda":
        return _torch_searcher(base, chunk_size)
    return _faiss_searcher(base, chunk_size, gpu=(name == "faiss-gpu"))


def _smallest(d: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the ``k`` smallest entries of each row of ``d`` (unordered)."""
    if k >= d.shape[1]:
        return np.broadcast_to(np.arange(d.shape[1]), d.shape)
    return np.argpartition(d, k - 1, axis=1)[:, :k]


def _numpy_searcher(base32: np.ndarray) -> Searcher:
    n = base32.shape[0]
    bnorm = np.einsum("nd,nd->n", base32, base32)

    def gather(ids: np.ndarray) -> np.ndarray:
        return base32[ids]

    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = q.shape[0]
        q_step = max(1, min(rows, _NUMPY_BLOCK // max(1, min(n, 8192))))
        b_step = max(k, _NUMPY_BLOCK // q_step)
        best_d = np.empty((rows, k), dtype=np.float32)
        best_i = np.empty((rows, k), dtype=np.int64)
        for qs in range(0, rows, q_step):
            qb = q[qs : qs + q_step]
            qn = np.einsum("qd,qd->q", qb, qb)
            run_d = np.empty((qb.shape[0], 0), dtype=np.float32)
            run_i = np.empty((qb.shape[0], 0), dtype=np.int64)
            for bs in range(0, n, b_step):
                d = qn[:, None] + bnorm[None, bs : bs + b_step] - 2.0 * (qb @ base32[bs : bs + b_step].T)
                part = _smallest(d, k)
                cd = np.concatenate([run_d, np.take_along_axis(d, part, 1)], 1)
                ci = np.concatenate([run_i, part.astype(np.int64) + bs], 1)
                sel = _smallest(cd, k)
                run_d, run_i = np.take_along_axis(cd, sel, 1), np.take_along_axis(ci, sel, 1)
            end = qs + qb.shape[0]
            best_d[qs:end], best_i[qs:end] = _refine(qb, run_i, k, gather)
        return best_d, best_i

    return search


def _faiss_searcher(base: np.ndarray, chunk_size: int, *, gpu: bool) -> Searcher:
    faiss = _faiss()
    if faiss is None:  # pragma: no cover - resolve_backend checked this
        raise ValueError("faiss is not installed (pip install faiss-cpu)")
    dim = base.shape[1]
    res = faiss.StandardGpuResources() if gpu else None
    index = faiss.GpuIndexFlatL2(res, dim) if gpu else faiss.IndexFlatL2(dim)
    keep = (index, res)  # the GPU resources must outlive the index
    for _, block in _chunks(base, chunk_size, "base"):
        index.add(block)

    def gather(ids: np.ndarray) -> np.ndarray:
        # rows come from the caller's array (memmap or float16 alike), converted per block
        return np.asarray(base[ids.ravel()], dtype=np.float32).reshape(*ids.shape, dim)

    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, idx = keep[0].search(q, k)
        return _refine(q, idx.astype(np.int64, copy=False), k, gather)

    return search


def _writable(x: np.ndarray) -> np.ndarray:
    """``x`` itself, or a copy when it is read-only (torch.from_numpy warns on read-only arrays)."""
    return x if x.flags.writeable else x.copy()


def _torch_refine(q: Any, idx: Any, base_t: Any, k: int) -> tuple[Any, Any]:
    """Torch twin of :func:`_refine`: exact distances of ``idx [q, m]``, sorted by (distance, index)."""
    import torch

    rows, m = idx.shape
    dist = torch.empty((rows, m), dtype=torch.float32, device=q.device)
    step = max(1, _REFINE_ELEMS // max(1, m * q.shape[1]))
    for s in range(0, rows, step):
        diff = base_t[idx[s : s + step]] - q[s : s + step, None, :]
        dist[s : s + step] = (diff * diff).sum(2)
    idx_sorted, o1 = torch.sort(idx, dim=1, stable=True)
    dist = torch.gather(dist, 1, o1)
    dist, o2 = torch.sort(dist, dim=1, stable=True)
    return dist[:, :k], torch.gather(idx_sorted, 1, o2)[:, :k]


@contextlib.contextmanager
def _exact_fp32_matmul() -> Iterator[None]:
    """Disable TF32 for cuBLAS matmuls inside the block, restoring the previous setting after."""
    import torch

    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        old = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = old
    else:  # pragma: no cover - older torch
        old_prec = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(old_prec)


def _torch_searcher(base: np.ndarray, chunk_size: int) -> Searcher:
    import torch

    dev = torch.device("cuda")
    n, dim = base.shape
    base_t = torch.empty((n, dim), dtype=torch.float32, device=dev)
    for s, block in _chunks(base, chunk_size, "base"):
        base_t[s : s + block.shape[0]] = torch.from_numpy(_writable(block)).to(dev)
    bnorm = (base_t * base_t).sum(1)

    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = q.shape[0]
        out_d = torch.empty((rows, k), dtype=torch.float32, device=dev)
        out_i = torch.empty((rows, k), dtype=torch.int64, device=dev)
        q_step = max(1, min(rows, _TORCH_BLOCK // max(1, min(n, 16384))))
        b_step = max(k, _TORCH_BLOCK // q_step)
        q_all = torch.from_numpy(_writable(q)).to(dev)
        with torch.no_grad(), _exact_fp32_matmul():
            for qs in range(0, rows, q_step):
                qb = q_all[qs : qs + q_step]
                qn = (qb * qb).sum(1, keepdim=True)
                run_d = run_i = None
                for bs in range(0, n, b_step):
                    bb = base_t[bs : bs + b_step]
                    d = torch.addmm(qn + bnorm[None, bs : bs + b_step], qb, bb.T, alpha=-2.0)
                    cd, ci = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
                    ci = ci + bs
                    if run_d is not None and run_i is not None:
                        cd = torch.cat([run_d, cd], 1)
                        ci = torch.cat([run_i, ci], 1)
                        if cd.shape[1] > k:
                            cd, sel = torch.topk(cd, k, dim=1, largest=False)
                            ci = torch.gather(ci, 1, sel)
                    run_d, run_i = cd, ci
                end = qs + qb.shape[0]
                out_d[qs:end], out_i[qs:end] = _torch_refine(qb, run_i, base_t, k)
        return out_d.cpu().numpy(), out_i.cpu().numpy()

    return search

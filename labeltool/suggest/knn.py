"""Exact k-nearest-neighbour search under squared Euclidean distance, with several backends.

Backends, in order of preference:

- ``"faiss-gpu"``: faiss ``GpuIndexFlatL2`` (only when the installed faiss has GPU support and sees
  a GPU; the CPU wheel simply does not offer it);
- ``"torch-cuda"``: exact fp32 ``matmul`` distances + ``topk`` on the GPU, in chunks;
- ``"faiss-cpu"``: faiss ``IndexFlatIP`` on the augmented base of :mod:`labeltool.suggest.knn_cpu`;
- ``"numpy"``: the same search with numpy's BLAS product, always available.

Every backend returns the same neighbours up to ties: candidates are found from fp32 products,
then the distances of the candidates are recomputed exactly as ``Σ (q − b)²`` in fp32 and the rows
are sorted by ``(distance, index)``. So distances of identical pairs are exactly 0 and equal
distances are ordered by base index on every backend. The CPU backends fetch ``k + 1``
candidates and prove from a bound on the products' rounding that they hold the ``k`` nearest rows
(searching the few rows where they do not again with more); the GPU backends fetch
``k + 8 + k // 4``.

:class:`ExactIndex` is built once from the base and searched any number of times;
:func:`knn_search` builds one and searches it. Queries may be a ``np.memmap``: they are converted
to float32 one chunk at a time, never as a whole. faiss and torch are imported on first use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import numpy as np

from labeltool.suggest.knn_cpu import CpuExact, refine

BACKENDS: tuple[str, ...] = ("faiss-gpu", "torch-cuda", "faiss-cpu", "numpy")

# Distance blocks on the GPU are bounded to about this many elements (queries x base rows).
_TORCH_BLOCK = 1 << 26
# Rows per exact re-ranking step on the GPU (rows x k x D floats).
_TORCH_REFINE_ELEMS = 1 << 24
# faiss's GPU flat index supports at most this many neighbours per query.
_FAISS_GPU_MAX_K = 2048

Searcher = Callable[[np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]


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


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def search_buffers(queries: np.ndarray, k: int, chunk_size: int | None, dim: int, rows: int,
                   default_chunk: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Validate a search of ``queries [Q, dim]`` for ``k`` neighbours among ``rows`` base rows;
    returns ``(k' = min(k, rows), chunk size, distances [Q, k'] float32, indices [Q, k'] int64)``
    (the output buffers, uninitialised)."""
    _check_matrix(queries, "queries")
    if queries.shape[1] != dim:
        raise ValueError(f"queries and base must have the same dimension, got {queries.shape[1]} and {dim}")
    kk = min(_check_int(k, "k"), rows)
    size = default_chunk if chunk_size is None else _check_int(chunk_size, "chunk_size")
    return (kk, size, np.empty((queries.shape[0], kk), dtype=np.float32),
            np.empty((queries.shape[0], kk), dtype=np.int64))


class ExactIndex:
    """Exact kNN over one base ``[N, D]`` (float16/float32, may be a memmap), built once.

    Building converts and checks the base (``ValueError`` on NaN/inf) and prepares the backend's
    index; :meth:`search` then costs only the queries. ``approximate`` is False.
    """

    approximate = False
    kind = "exact"

    def __init__(self, base: np.ndarray, *, backend: str = "auto", chunk_size: int = 65536) -> None:
        _check_matrix(base, "base")
        self.chunk_size = _check_int(chunk_size, "chunk_size")
        self.backend = resolve_backend(backend)
        self.rows, self.dim = base.shape
        base32 = _load_all(base, self.chunk_size, "base")
        self._cpu: CpuExact | None = None
        self._gpu: Searcher | None = None
        self._base32 = base32
        if self.rows == 0:
            return
        if self.backend in ("faiss-cpu", "numpy"):
            self._cpu = CpuExact(base32, use_faiss=self.backend == "faiss-cpu")
        elif self.backend == "torch-cuda":
            self._gpu = _torch_searcher(base32, self.chunk_size)
        else:
            self._gpu = _faiss_gpu_searcher(base32)

    def search(self, queries: np.ndarray, k: int, *, chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances [Q, k'] float32, indices [Q, k'] int64)`` of the ``k' = min(k, N)`` nearest
        base rows of every query row (ascending, ties by index); ``queries [Q, D]`` are read
        ``chunk_size`` rows at a time. ``ValueError`` on bad queries or ``k``."""
        kk, size, dist_out, idx_out = search_buffers(queries, k, chunk_size, self.dim, self.rows, self.chunk_size)
        for s, q in _chunks(queries, size, "queries"):
            if kk == 0:
                continue  # still converted: bad queries never pass silently
            dist_out[s : s + q.shape[0]], idx_out[s : s + q.shape[0]] = self._search_block(q, kk)
        return dist_out, idx_out

    def _search_block(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        fetch = min(self.rows, k + _extra_candidates(k))
        if self.backend == "faiss-gpu" and fetch > _FAISS_GPU_MAX_K:
            if self._cpu is None:  # faiss's GPU flat index cannot return that many
                self._cpu = CpuExact(self._base32, use_faiss=True)
            return self._cpu.search(q, k)
        if self._cpu is not None:
            return self._cpu.search(q, k)
        assert self._gpu is not None
        return self._gpu(q, fetch, k)


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
    _check_int(k, "k")
    _check_int(chunk_size, "chunk_size")
    return ExactIndex(base, backend=backend, chunk_size=chunk_size).search(queries, k)


def _extra_candidates(k: int) -> int:
    """How many candidates beyond ``k`` the GPU backends re-rank exactly."""
    return 8 + k // 4


# --- GPU backends: ``search(q, fetch, k)`` re-ranks ``fetch`` candidates, returns the first ``k`` ---


def _faiss_gpu_searcher(base32: np.ndarray) -> Searcher:
    faiss = _faiss()
    if faiss is None:  # pragma: no cover - resolve_backend checked this
        raise ValueError("faiss is not installed (pip install faiss-cpu)")
    res = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatL2(res, base32.shape[1])
    keep = (index, res)  # the GPU resources must outlive the index
    index.add(base32)

    def search(q: np.ndarray, fetch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, idx = keep[0].search(q, fetch)
        return refine(q, idx.astype(np.int64, copy=False), k, base32)

    return search


def _writable(x: np.ndarray) -> np.ndarray:
    """``x`` itself, or a copy when it is read-only (torch.from_numpy warns on read-only arrays)."""
    return x if x.flags.writeable else x.copy()


def _torch_refine(q: Any, idx: Any, base_t: Any, k: int) -> tuple[Any, Any]:
    """Torch twin of :func:`labeltool.suggest.knn_cpu.refine`: exact distances of ``idx [q, m]``, sorted by (distance, index)."""
    import torch

    rows, m = idx.shape
    dist = torch.empty((rows, m), dtype=torch.float32, device=q.device)
    step = max(1, _TORCH_REFINE_ELEMS // max(1, m * q.shape[1]))
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


def _torch_searcher(base32: np.ndarray, chunk_size: int) -> Searcher:
    import torch

    dev = torch.device("cuda")
    n, dim = base32.shape
    base_t = torch.empty((n, dim), dtype=torch.float32, device=dev)
    for s in range(0, n, chunk_size):
        base_t[s : s + chunk_size] = torch.from_numpy(_writable(base32[s : s + chunk_size])).to(dev)
    bnorm = (base_t * base_t).sum(1)

    def search(q: np.ndarray, fetch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = q.shape[0]
        out_d = torch.empty((rows, k), dtype=torch.float32, device=dev)
        out_i = torch.empty((rows, k), dtype=torch.int64, device=dev)
        q_step = max(1, min(rows, _TORCH_BLOCK // max(1, min(n, 16384))))
        b_step = max(fetch, _TORCH_BLOCK // q_step)
        q_all = torch.from_numpy(_writable(q)).to(dev)
        with torch.no_grad(), _exact_fp32_matmul():
            for qs in range(0, rows, q_step):
                qb = q_all[qs : qs + q_step]
                qn = (qb * qb).sum(1, keepdim=True)
                run_d = run_i = None
                for bs in range(0, n, b_step):
                    bb = base_t[bs : bs + b_step]
                    d = torch.addmm(qn + bnorm[None, bs : bs + b_step], qb, bb.T, alpha=-2.0)
                    cd, ci = torch.topk(d, min(fetch, d.shape[1]), dim=1, largest=False)
                    ci = ci + bs
                    if run_d is not None and run_i is not None:
                        cd = torch.cat([run_d, cd], 1)
                        ci = torch.cat([run_i, ci], 1)
                        if cd.shape[1] > fetch:
                            cd, sel = torch.topk(cd, fetch, dim=1, largest=False)
                            ci = torch.gather(ci, 1, sel)
                    run_d, run_i = cd, ci
                end = qs + qb.shape[0]
                out_d[qs:end], out_i[qs:end] = _torch_refine(qb, run_i, base_t, k)
        return out_d.cpu().numpy(), out_i.cpu().numpy()

    return search

"""Exact k-nearest-neighbour search on the CPU: one fp32 product per block, then a certificate.

The base is stored augmented, ``a = [b, −|b|²/2]`` ``[N, D+1]``: the inner product of ``[q, 1]``
with ``a`` is ``q·b − |b|²/2``, so the largest products are the nearest rows
(``|q − b|² = |q|² − 2·(q·b − |b|²/2)``) and no pass over the product block is needed to turn it
into distances. faiss's ``IndexFlatIP`` (BLAS products, heap per query) or numpy's BLAS product
with ``argpartition`` finds the ``m`` largest.

Certificate: a product of ``D + 1`` fp32 terms is within ``γ·Σ|xᵢ yᵢ|`` of its real value whatever
the summation order (``γ = n·u / (1 − n·u)``, ``u = 2⁻²⁴``), so each approximate distance ``d̃`` is
within ``E_q = 2γ(|q|·B + B²)`` of the real one (``B`` = the largest base norm; twice that is
used). A query's ``m`` candidates hold its ``k`` nearest rows when ``d̃ₘ − d̃ₖ > 2·E_q``: every row
not fetched is then strictly farther than each of the ``k`` first. Rows that fail (near or exact
ties at the ``k``-th place, duplicates) are searched again with more candidates until they pass
or all rows are candidates. The candidates' distances are then recomputed as ``Σ (q − b)²`` in
fp32 and sorted by ``(distance, index)`` (:func:`refine`), as every backend does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

# Distance blocks are bounded to about this many elements (queries x base rows).
_NUMPY_BLOCK = 1 << 22
# Rows per exact re-ranking step (rows x k x D floats): about 1 MB, so each step stays in cache.
_REFINE_ELEMS = 1 << 18
# faiss's product blocks, query rows x base rows (its defaults are 4096 x 1024): 5% less CPU time
# measured at 100k x 4k rows, 64-d, one thread.
_FAISS_BLOCKS = (512, 4096)
# faiss multiplies with BLAS from this many query rows on (its default, 128000 / D, sends up to
# ~2000 queries through a loop over the base, 10-30x slower against a large base).
_FAISS_BLAS_FROM_ROWS = 32
_UNIT = 2.0**-24
_SAFETY = 2.0


def refine(q: np.ndarray, idx: np.ndarray, k: int, base32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances of the candidates ``idx [r, m]`` of ``q [r, D]`` among ``base32 [N, D]``,
    sorted by (distance, index), first ``k``: ``(distances [r, k] float32, indices [r, k] int64)``."""
    rows, m = idx.shape
    dist = np.empty((rows, m), dtype=np.float32)
    step = max(1, _REFINE_ELEMS // max(1, m * q.shape[1]))
    for s in range(0, rows, step):
        diff = base32[idx[s : s + step]]
        np.subtract(diff, q[s : s + step, None, :], out=diff)
        dist[s : s + step] = np.einsum("rmd,rmd->rm", diff, diff)
    # (distance, index) as one int64 key: the bits of a float32 >= 0 order as the float does
    key = (dist.view(np.int32).astype(np.int64) << 32) | idx
    order = np.argsort(key, axis=1)[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def _top_products(ip: np.ndarray, m: int) -> np.ndarray:
    """Column positions of the ``m`` largest entries of each row of ``ip`` (unordered)."""
    if m >= ip.shape[1]:
        return np.broadcast_to(np.arange(ip.shape[1]), ip.shape)
    return np.argpartition(ip, ip.shape[1] - m, axis=1)[:, ip.shape[1] - m :]


@contextlib.contextmanager
def _faiss_blocks(dim: int) -> Iterator[None]:
    """faiss's product blocks set to :data:`_FAISS_BLOCKS` and its BLAS threshold to
    :data:`_FAISS_BLAS_FROM_ROWS` rows of ``dim`` inside the block, restored after."""
    import faiss

    cv = faiss.cvar
    old = (cv.distance_compute_blas_query_bs, cv.distance_compute_blas_database_bs, cv.distance_compute_blas_threshold)
    cv.distance_compute_blas_query_bs, cv.distance_compute_blas_database_bs = _FAISS_BLOCKS
    cv.distance_compute_blas_threshold = _FAISS_BLAS_FROM_ROWS * dim
    try:
        yield
    finally:
        (cv.distance_compute_blas_query_bs, cv.distance_compute_blas_database_bs,
         cv.distance_compute_blas_threshold) = old


class CpuExact:
    """Exact kNN against one base ``[N, D]`` float32, built once and searched block by block."""

    def __init__(self, base32: np.ndarray, *, use_faiss: bool) -> None:
        n, d = base32.shape
        self.rows, self.dim = n, d
        self.base32 = base32
        norms = np.einsum("nd,nd->n", base32, base32, dtype=np.float64)
        aug = np.empty((n, d + 1), dtype=np.float32)
        aug[:, :d] = base32
        aug[:, d] = -0.5 * norms
        big = float(np.sqrt(norms.max())) if n else 0.0
        terms = d + 2
        gamma = terms * _UNIT / (1.0 - terms * _UNIT)
        self._err = (_SAFETY * 2.0 * gamma * big, _SAFETY * 2.0 * gamma * big * big)
        self._index: Any = None
        self._aug: np.ndarray | None = aug
        if use_faiss:
            import faiss

            self._index = faiss.IndexFlatIP(d + 1)
            self._index.add(aug)
            self._aug = None

    def error_bound(self, qnorm2: np.ndarray) -> np.ndarray:
        """``[r]`` bound on ``|d̃ − d|`` for queries of squared norms ``qnorm2 [r]`` (float64)."""
        return self._err[0] * np.sqrt(qnorm2) + self._err[1]

    def candidates(self, q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` nearest rows of ``q [r, D]`` by approximate distance:
        ``(d̃ [r, m] float64 ascending, indices [r, m] int64)``."""
        qa = np.empty((q.shape[0], self.dim + 1), dtype=np.float32)
        qa[:, : self.dim] = q
        qa[:, self.dim] = 1.0
        if self._index is not None:
            with _faiss_blocks(self.dim + 1):
                ip, idx = self._index.search(qa, m)
            idx = idx.astype(np.int64, copy=False)
        else:
            ip, idx = self._numpy_top(qa, m)
        qn = np.einsum("rd,rd->r", q, q, dtype=np.float64)
        return qn[:, None] - 2.0 * ip.astype(np.float64), idx

    def _numpy_top(self, qa: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Largest ``m`` products of ``qa [r, D+1]`` with the augmented base, in blocks, descending."""
        assert self._aug is not None
        rows, n = qa.shape[0], self.rows
        q_step = max(1, min(rows, _NUMPY_BLOCK // max(1, min(n, 8192))))
        b_step = max(m, _NUMPY_BLOCK // q_step)
        best_ip = np.empty((rows, m), dtype=np.float32)
        best_i = np.empty((rows, m), dtype=np.int64)
        for qs in range(0, rows, q_step):
            qb = qa[qs : qs + q_step]
            run_ip = np.empty((qb.shape[0], 0), dtype=np.float32)
            run_i = np.empty((qb.shape[0], 0), dtype=np.int64)
            for bs in range(0, n, b_step):
                ip = qb @ self._aug[bs : bs + b_step].T
                part = _top_products(ip, m)
                cand_ip = np.concatenate([run_ip, np.take_along_axis(ip, part, 1)], 1)
                cand_i = np.concatenate([run_i, part.astype(np.int64) + bs], 1)
                sel = _top_products(cand_ip, m)
                run_ip, run_i = np.take_along_axis(cand_ip, sel, 1), np.take_along_axis(cand_i, sel, 1)
            order = np.argsort(-run_ip, axis=1, kind="stable")
            end = qs + qb.shape[0]
            best_ip[qs:end] = np.take_along_axis(run_ip, order, 1)
            best_i[qs:end] = np.take_along_axis(run_i, order, 1)
        return best_ip, best_i

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``k`` nearest rows of ``q [r, D]`` (``1 <= k <= N``): ``(distances [r, k] float32,
        indices [r, k] int64)``, ascending, ties by index."""
        rows, n = q.shape[0], self.rows
        dist = np.empty((rows, k), dtype=np.float32)
        idx = np.empty((rows, k), dtype=np.int64)
        todo = np.arange(rows)
        bound = self.error_bound(np.einsum("rd,rd->r", q, q, dtype=np.float64))
        m = min(n, k + 1)
        sub = q
        while todo.size:
            d_approx, cand = self.candidates(sub, m)
            ok = np.ones(todo.size, dtype=bool) if m >= n else d_approx[:, m - 1] - d_approx[:, k - 1] > 2 * bound[todo]
            done = todo[ok]
            dist[done], idx[done] = refine(sub[ok], cand[ok], k, self.base32)
            todo = todo[~ok]
            sub = q[todo]
            m = min(n, 2 * m + 8)
        return dist, idx

"""Approximate nearest neighbours for large labeled sets: a calibrated faiss IVF or HNSW index.

:func:`build_index` is the switch: below ``approximate_from`` base rows (or with ``None``, or on a
GPU backend, where exact search is fast) it returns the exact
:class:`~labeltool.suggest.knn.ExactIndex`, so results are identical to
:func:`~labeltool.suggest.knn.knn_search`; from there on an :class:`ApproxIndex`.

The kind is chosen by size: ``"ivf"`` (``IndexIVFFlat``, ``4·√N`` lists, k-means on ``32`` rows
per list) unless the expected queries are at least ``_HNSW_QUERIES_PER_ROW`` times the base rows,
where ``"hnsw"`` (``IndexHNSWFlat``, 16 links) pays for its slower build with faster queries.
Its search breadth (IVF ``nprobe``, HNSW ``efSearch``) is calibrated on the first query chunk: the
smallest breadth whose recall@1 on up to ``_SAMPLE`` of those queries reaches ``target_recall``
against exact search (measured, :attr:`ApproxIndex.calibration`). An HNSW graph that misses the
target even at its widest breadth (class-clustered data can leave it in the wrong cluster) is
replaced by IVF; IVF that needs more than ``_MAX_PROBED_SHARE`` of its lists is no faster than
exact search, which then answers instead (:attr:`ApproxIndex.exact_instead`). Results are re-ranked like
exact search (distances ``Σ (q − b)²`` in fp32, ties by index); a query with fewer than ``k`` hits
is searched exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from labeltool.suggest.knn import (
    ExactIndex,
    _check_int,
    _check_matrix,
    _chunks,
    _load_all,
    resolve_backend,
    search_buffers,
)
from labeltool.suggest.knn_cpu import refine

ANN_KINDS: tuple[str, ...] = ("ivf", "hnsw")
TARGET_RECALL = 0.995
_SAMPLE = 1000
_HNSW_QUERIES_PER_ROW = 3.0
_LISTS_PER_ROOT = 4.0
# IVF that must probe more than this share of its lists to reach the target is slower than exact
# search or nearly so (measured: 7.6% of the lists took 0.8x exact's time), so exact search is used.
_MAX_PROBED_SHARE = 0.05
_IVF_PROBES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)
_HNSW_EF = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def choose_kind(rows: int, queries: int | None) -> str:
    """``"hnsw"`` when ``queries >= _HNSW_QUERIES_PER_ROW · rows``, else ``"ivf"``."""
    if queries is not None and queries >= _HNSW_QUERIES_PER_ROW * rows:
        return "hnsw"
    return "ivf"


class ApproxIndex:
    """Approximate kNN over one base ``[N, D]`` (float16/float32), built and calibrated once.

    ``kind`` ``"auto"`` (see :func:`choose_kind`, ``queries`` = the expected number of queries),
    ``"ivf"`` or ``"hnsw"``. :meth:`search` has the signature and output of
    :meth:`ExactIndex.search <labeltool.suggest.knn.ExactIndex.search>`.
    """

    approximate = True

    def __init__(self, base: np.ndarray, *, kind: str = "auto", queries: int | None = None,
                 target_recall: float = TARGET_RECALL, seed: int = 0, chunk_size: int = 65536) -> None:
        _check_matrix(base, "base")
        if kind != "auto" and kind not in ANN_KINDS:
            raise ValueError(f"unknown approximate index kind {kind!r}; valid: {['auto', *ANN_KINDS]}")
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
        self.chunk_size = _check_int(chunk_size, "chunk_size")
        self.rows, self.dim = base.shape
        if self.rows < 2:
            raise ValueError(f"an approximate index needs at least 2 base rows, got {self.rows}")
        self._base32 = _load_all(base, self.chunk_size, "base")
        self._exact: ExactIndex | None = None
        self._index: Any = None
        self._rng = np.random.default_rng(seed)
        self.kind = choose_kind(self.rows, queries) if kind == "auto" else kind
        self._target = float(target_recall)
        self.calibration: dict[str, Any] = {}
        self.exact_instead = False
        self._sweep: tuple[str, list[int], Callable[[int], None]] = ("", [], lambda _: None)
        if self.kind == "hnsw":
            self._build_hnsw()
        else:
            self._build_ivf()

    def _exact_index(self) -> ExactIndex:
        if self._exact is None:
            self._exact = ExactIndex(self._base32, backend="faiss-cpu", chunk_size=self.chunk_size)
        return self._exact

    def _build_ivf(self) -> None:
        import faiss

        nlist = int(max(1, min(self.rows // 8, round(_LISTS_PER_ROOT * np.sqrt(self.rows)))))
        self._quantizer = faiss.IndexFlatL2(self.dim)
        index = faiss.IndexIVFFlat(self._quantizer, self.dim, nlist)
        index.cp.niter = 10
        index.cp.seed = int(self._rng.integers(1 << 30))
        index.cp.min_points_per_centroid = 1  # a small training sample is fine, and not worth a warning
        n_train = min(self.rows, 32 * nlist)
        index.train(self._base32[np.sort(self._rng.choice(self.rows, n_train, replace=False))])
        index.add(self._base32)
        self._index = index
        probes = [p for p in _IVF_PROBES if p < nlist] + [nlist]
        self._sweep = ("nprobe", probes, lambda p: setattr(index, "nprobe", p))

    def _build_hnsw(self) -> None:
        import faiss

        index = faiss.IndexHNSWFlat(self.dim, 16)
        index.hnsw.efConstruction = 40
        index.add(self._base32)
        self._index = index
        self._sweep = ("efSearch", list(_HNSW_EF), lambda e: setattr(index.hnsw, "efSearch", e))

    def calibrate(self, sample: np.ndarray) -> None:
        """Set the smallest breadth whose recall@1 on ``sample [S, D]`` float32 queries reaches the
        target against exact search (an HNSW graph that misses it is replaced by IVF; IVF's widest
        breadth probes every list). Fills :attr:`calibration`."""
        t = time.perf_counter()
        best = self._exact_index().search(sample, 1)[0][:, 0].astype(np.float64)
        while True:
            name, values, apply = self._sweep
            for value in values:
                apply(value)
                d, i = self._index.search(sample, 1)
                found = np.where(i[:, 0] < 0, np.inf, d[:, 0])
                recall = float(np.mean(found <= best + 1e-5 * (1.0 + best)))
                if recall >= self._target:
                    break
            if recall >= self._target or self.kind == "ivf":
                break
            self.kind = "ivf"
            self._build_ivf()
        self.exact_instead = self.kind == "ivf" and value > _MAX_PROBED_SHARE * self._index.nlist
        self.calibration = {name: value, "recall_at_1": round(recall, 4), "sample": int(sample.shape[0]),
                            "seconds": round(time.perf_counter() - t, 3), "exact_instead": self.exact_instead}

    def search(self, queries: np.ndarray, k: int, *, chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances [Q, k'] float32, indices [Q, k'] int64)``, ``k' = min(k, N)``: approximate
        nearest base rows of every query row, ascending, ties by index. The first search calibrates
        the index on up to ``_SAMPLE`` rows of its first chunk (:meth:`calibrate`)."""
        kk, size, dist_out, idx_out = search_buffers(queries, k, chunk_size, self.dim, self.rows, self.chunk_size)
        for s, q in _chunks(queries, size, "queries"):
            if not self.calibration and q.shape[0]:
                pick = self._rng.choice(q.shape[0], min(_SAMPLE, q.shape[0]), replace=False)
                self.calibrate(q[np.sort(pick)])
            if self.exact_instead:
                dist_out[s : s + q.shape[0]], idx_out[s : s + q.shape[0]] = self._exact_index().search(q, kk)
                continue
            _, idx = self._index.search(q, kk)
            idx = idx.astype(np.int64, copy=False)
            d, i = refine(q, np.maximum(idx, 0), kk, self._base32)
            short = np.flatnonzero((idx < 0).any(axis=1))
            if short.size:
                d[short], i[short] = self._exact_index().search(q[short], kk)
            dist_out[s : s + q.shape[0]], idx_out[s : s + q.shape[0]] = d, i
        return dist_out, idx_out


def build_index(base: np.ndarray, *, backend: str = "auto", approximate_from: int | None = None,
                queries: int | None = None, chunk_size: int = 65536) -> ExactIndex | ApproxIndex:
    """The index to search ``base [N, D]`` with: an :class:`ApproxIndex` when ``approximate_from``
    is set, ``N >= approximate_from`` and the backend resolves to ``"faiss-cpu"``; else an
    :class:`~labeltool.suggest.knn.ExactIndex` on ``backend``. ``queries``: how many query rows
    are expected (picks the approximate kind)."""
    if approximate_from is not None:
        _check_int(approximate_from, "approximate_from")
        _check_matrix(base, "base")
        if base.shape[0] >= max(2, approximate_from) and resolve_backend(backend) == "faiss-cpu":
            return ApproxIndex(base, queries=queries, chunk_size=chunk_size)
    return ExactIndex(base, backend=backend, chunk_size=chunk_size)

"""The embeddable pool of a project: which images have features, and a memmap view of them."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np


class RowView:
    """Rows ``rows`` of a (memory-mapped) matrix, indexable like an array ``[len(rows), D]``.

    Only the rows actually indexed are read, so a 1M-image pool never has to sit in RAM.
    """

    def __init__(self, matrix: np.ndarray, rows: np.ndarray) -> None:
        self.matrix = matrix
        self.rows = np.asarray(rows, dtype=np.int64)
        self._identity = len(self.rows) == matrix.shape[0] and bool(np.all(self.rows == np.arange(len(self.rows))))

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.matrix.shape[1]))

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return self.matrix.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        if self._identity and isinstance(key, slice):
            return np.asarray(self.matrix[key])
        sel = self.rows[key]
        if isinstance(key, slice) and len(sel) and sel[-1] - sel[0] == len(sel) - 1 and np.all(np.diff(sel) == 1):
            return np.asarray(self.matrix[sel[0] : sel[-1] + 1])
        return np.asarray(self.matrix[sel])

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        out = self[slice(None)]
        return out.astype(dtype) if dtype is not None else out


@dataclass(frozen=True)
class Pool:
    """Images that can take part in training and suggestions (decoded fine, features cached).

    ``ids``, ``relpaths`` and ``hashes`` are aligned; ``features`` is a :class:`RowView`.
    """

    ids: np.ndarray  # [N] int64
    relpaths: list[str]
    hashes: list[str]
    features: RowView

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self, labels: Mapping[int, int]) -> np.ndarray:
        """Label array ``[N]`` int64 (-1 = unlabeled) from an image id → class id mapping."""
        return np.fromiter((labels.get(int(i), -1) for i in self.ids), dtype=np.int64, count=len(self.ids))

    def position(self) -> dict[int, int]:
        """Image id → row position in this pool."""
        return {int(i): p for p, i in enumerate(self.ids)}


@dataclass(frozen=True)
class PoolIndex:
    """The usable (present, decoded fine) images of a project and which of them have features.

    Made from the store and the feature cache once per change of either (see
    :meth:`~labeltool.session.LabelingSession.pool_index`), so a page that only needs counts or
    ids does not read every image row again. ``ids``, ``relpaths``, ``hashes`` and ``cached``
    are aligned, in image-id order.
    """

    key: tuple[int, int]  # (the store's images version, the cache's row count) it was made at
    ids: np.ndarray  # [N] int64
    relpaths: list[str]
    hashes: list[str]  # "" where the scan recorded none
    cached: np.ndarray  # [N] bool: features are cached
    present: int  # present images, usable or not
    unusable: list[tuple[str, str]]  # (relpath, reason) of the present images that could not be used

    @classmethod
    def build(cls, key: tuple[int, int], rows: list[tuple[int, str, str | None]], cached: Container[str],
              counts: tuple[int, list[tuple[str, str]]]) -> PoolIndex:
        """From ``(id, relpath, sha256)`` rows of the usable images, the cached hashes and the
        store's ``(present, unusable)`` counts."""
        hashes = [h or "" for _, _, h in rows]
        return cls(key, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), [r[1] for r in rows],
                   hashes, np.fromiter((bool(h) and h in cached for h in hashes), dtype=bool, count=len(rows)),
                   counts[0], counts[1])

    @cached_property
    def missing(self) -> int:
        """Usable images with a content hash but no cached features (still to embed)."""
        return sum(1 for h, c in zip(self.hashes, self.cached, strict=True) if h and not c)

    @cached_property
    def id_set(self) -> frozenset[int]:
        """The usable images' ids."""
        return frozenset(self.ids.tolist())

    def pool_rows(self) -> tuple[np.ndarray, list[str], list[str]]:
        """``(ids, relpaths, hashes)`` of the images with cached features (the pool)."""
        keep = np.flatnonzero(self.cached)
        if keep.size == self.cached.size:
            return self.ids, self.relpaths, self.hashes
        return self.ids[keep], [self.relpaths[i] for i in keep], [self.hashes[i] for i in keep]

    def unlabeled_in_pool(self, labels: Mapping[int, int]) -> int:
        """Images of the pool without a label in ``labels``."""
        labeled = np.fromiter(labels.keys(), dtype=np.int64, count=len(labels))
        pool_ids = self.ids[self.cached]
        return int(pool_ids.size - np.count_nonzero(np.isin(pool_ids, labeled)))

"""The embeddable pool of a project: which images have features, and a memmap view of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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

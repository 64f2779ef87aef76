"""Rejected ``(image, class)`` pairs, looked up per chunk of unlabeled positions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class Rejections:
    """Rejected (unlabeled position, class) pairs.

    ``rejected`` holds ``(image_id, class_id)`` pairs; ``unlabeled_ids [U]`` the image id of each
    unlabeled position. Pairs naming an image outside the pool or a class outside ``[0, C)`` are
    ignored.
    """

    def __init__(self, rejected: Iterable[tuple[int, int]], unlabeled_ids: np.ndarray, num_classes: int) -> None:
        pairs = np.array([(int(i), int(c)) for i, c in rejected], dtype=np.int64).reshape(-1, 2)
        order = np.argsort(unlabeled_ids, kind="stable")
        sorted_ids = unlabeled_ids[order]
        at = np.searchsorted(sorted_ids, pairs[:, 0])
        at_c = np.minimum(at, max(len(sorted_ids) - 1, 0))
        ok = (at < len(sorted_ids)) & (pairs[:, 1] >= 0) & (pairs[:, 1] < num_classes)
        ok &= len(sorted_ids) > 0
        if len(sorted_ids):
            ok &= sorted_ids[at_c] == pairs[:, 0]
        pos = order[at_c[ok]] if len(sorted_ids) else np.zeros(0, np.int64)
        srt = np.argsort(pos, kind="stable")
        self.num_classes = num_classes
        self.pos, self.cls = pos[srt], pairs[ok, 1][srt]

    def mask(self, start: int, stop: int) -> np.ndarray:
        """``[stop - start, C]`` bool: True where the pair is rejected."""
        out = np.zeros((stop - start, self.num_classes), dtype=bool)
        lo, hi = np.searchsorted(self.pos, [start, stop])
        out[self.pos[lo:hi] - start, self.cls[lo:hi]] = True
        return out

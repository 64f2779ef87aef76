"""The order images are embedded in: what a first round needs first.

Labeled images come first (a round trains on them), then the rest by content hash. A hash order
is a uniformly random permutation whatever the folder's layout, stable as images are added, so
every prefix of it is a representative sample of the pool: the first suggestions can be made
from the images embedded so far while the rest are still being embedded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def embedding_order(hashes: Sequence[str], labeled: np.ndarray) -> np.ndarray:
    """Indices ``[n]`` into ``hashes`` (sha256 hex, one per image; ``labeled [n]`` bool): labeled
    images first in their given order, then the others in ascending hash order."""
    labeled = np.asarray(labeled, dtype=bool)
    if labeled.shape != (len(hashes),):
        raise ValueError(f"labeled must have one flag per image: {labeled.shape} for {len(hashes)} images")
    first = np.flatnonzero(labeled)
    rest = np.flatnonzero(~labeled)
    by_hash = sorted(range(len(rest)), key=lambda j: hashes[int(rest[j])])
    return np.concatenate([first, rest[np.asarray(by_hash, dtype=np.int64)]]).astype(np.int64)

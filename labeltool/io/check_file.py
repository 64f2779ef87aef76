"""The anchor check of a round on disk (``<project>/cache/checks/round-N.npz``), so that the
precision of any set of its suggestions and the coverage meter can be stated after a reopen."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from labeltool.rounds.anchor_check import AnchorCheck

__all__ = ["check_path", "load_check", "save_check"]


def check_path(cache_dir: Path, round_id: int) -> Path:
    return cache_dir / "checks" / f"round-{round_id}.npz"


def save_check(path: Path, check: AnchorCheck, candidate_ids: np.ndarray, candidate_classes: np.ndarray) -> None:
    """Write ``check`` and the best class ``candidate_classes [M]`` of each image ``candidate_ids [M]``
    (written to a temporary file first, so a crash leaves the previous file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, held_truth=check.held_truth, held_scores=check.held_scores, ids=check.ids, scores=check.scores,
             temperature=np.float64(check.temperature), boot=check.boot, shift=check.shift,
             offset=np.float64(check.offset),
             candidate_ids=np.asarray(candidate_ids, dtype=np.int64),
             candidate_classes=np.asarray(candidate_classes, dtype=np.int64))
    os.replace(tmp, path)


def load_check(path: Path) -> tuple[AnchorCheck, np.ndarray, np.ndarray] | None:
    """``(check, candidate ids [M], candidate classes [M])``, or None when the file is missing or unreadable."""
    try:
        with np.load(path) as z:
            check = AnchorCheck(z["held_truth"], z["held_scores"], z["ids"], z["scores"], float(z["temperature"]),
                                z["boot"], z["shift"], float(z["offset"]))
            return check, z["candidate_ids"], z["candidate_classes"]
    except (OSError, KeyError, ValueError):
        return None

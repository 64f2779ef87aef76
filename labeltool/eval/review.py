"""How earlier suggestions fared under review, from the decision log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from labeltool.data.decisions import Decision, cancelled_ids

__all__ = ["review_stats"]


def review_stats(log: Sequence[Decision]) -> dict[str, Any]:
    """Reviewed, accepted and rejected counts, the acceptance rate and the mean confidence of
    the accepted suggestions (undone decisions left out)."""
    cancelled = cancelled_ids(log)
    acc = [d.confidence for d in log if d.action == "accept" and d.id not in cancelled]
    rej = [d for d in log if d.action == "reject" and d.id not in cancelled]
    reviewed = len(acc) + len(rej)
    known = [c for c in acc if c is not None]
    return {
        "reviewed": reviewed, "accepted": len(acc), "rejected": len(rej),
        "acceptance_rate": round(len(acc) / reviewed, 4) if reviewed else None,
        "mean_conf_accepted": round(float(np.mean(known)), 4) if known else None,
    }

"""Calibrating suggestion confidences on past reviews and estimating a batch's precision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Calibration", "calibration_table", "estimated_precision"]

# (low, high, observed acceptance rate) rows, or a mapping {(low, high): rate}.
Calibration = Sequence[tuple[float, float, float]] | Mapping[tuple[float, float], float]


def _calibrated(conf: np.ndarray, calibration: Calibration) -> np.ndarray:
    rows = (
        [(lo, hi, rate) for (lo, hi), rate in calibration.items()]
        if isinstance(calibration, Mapping)
        else [tuple(r) for r in calibration]
    )
    out = conf.copy()
    done = np.zeros(conf.shape, dtype=bool)
    for row in sorted(rows):
        if len(row) != 3:
            raise ValueError(f"calibration rows must be (low, high, rate), got {row!r}")
        lo, hi, rate = (float(v) for v in row)
        if not (lo < hi) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"bad calibration row {row!r}: need low < high and 0 <= rate <= 1")
        inside = (conf >= lo) & ((conf < hi) | ((hi >= 1.0) & (conf <= hi))) & ~done
        out[inside] = rate
        done |= inside
    return out


def estimated_precision(
    confidences: Sequence[float] | np.ndarray, calibration: Calibration | None = None
) -> float:
    """Estimated fraction of a batch that the reviewer will accept.

    This is an estimate, not a measurement: without calibration it is the mean confidence of
    the batch (exact only if the confidences are calibrated probabilities). With a calibration
    table from earlier rounds (``(low, high, acceptance rate)`` per confidence bin, e.g. from
    :func:`calibration_table`), each confidence is replaced by its bin's observed acceptance
    rate first; confidences outside every bin keep their own value. Empty batch: ``nan``.
    """
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    if conf.size == 0:
        return float("nan")
    if calibration is not None:
        conf = _calibrated(conf, calibration)
    return float(conf.mean())


def calibration_table(
    confidences: Sequence[float] | np.ndarray, accepted: Sequence[bool] | np.ndarray, bins: int = 10
) -> list[tuple[float, float, float]]:
    """``(low, high, acceptance rate)`` for each non-empty equal-width bin of ``[0, 1]``.

    ``confidences [M]`` of past suggestions and ``accepted [M]`` whether each was accepted.
    """
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    acc = np.asarray(accepted, dtype=bool).ravel()
    if conf.shape != acc.shape:
        raise ValueError(
            f"confidences and accepted must have the same length, got {conf.size} and {acc.size}"
        )
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    which = np.clip((conf * bins).astype(np.int64), 0, bins - 1)
    table = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            table.append((b / bins, (b + 1) / bins, float(acc[sel].mean())))
    return table

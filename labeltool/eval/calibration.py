"""Calibrating suggestion confidences on past reviews and estimating a batch's precision."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BatchEstimate", "Calibration", "batch_estimate", "calibration_table", "estimated_precision",
           "expected_calibration_error", "fit_temperature", "fit_temperatures", "review_bias", "tempered",
           "temperature_nll"]

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


# ---------------------------------------------------------------------------- tempered class scores
TEMPERATURES = np.geomspace(0.02, 5.0, 80)  # the grid :func:`fit_temperature` searches


def tempered(scores: np.ndarray, temperature: float) -> np.ndarray:
    """``[Q, C]`` class probabilities ``s^(1/T) / Σ s^(1/T)`` of non-negative scores ``[Q, C]``."""
    logs = np.log(np.maximum(np.asarray(scores, dtype=np.float64), 1e-12)) / temperature
    logs -= logs.max(axis=1, keepdims=True)
    p = np.exp(logs)
    return p / p.sum(axis=1, keepdims=True)


def temperature_nll(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``[H, T]`` negative log-likelihood of each true class ``truth [H]`` under :func:`tempered`
    ``scores [H, C]`` at each temperature of :data:`TEMPERATURES`."""
    logs = np.log(np.maximum(np.asarray(scores, dtype=np.float64), 1e-12))
    own = logs[np.arange(truth.size), truth]
    out = np.empty((truth.size, TEMPERATURES.size))
    for j, t in enumerate(TEMPERATURES):
        z = logs / t
        m = z.max(axis=1)
        out[:, j] = m + np.log(np.exp(z - m[:, None]).sum(axis=1)) - own / t
    return out


def fit_temperatures(scores: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]`` temperatures of :data:`TEMPERATURES`, one per row of ``weights [B, H]``: the ``T``
    that minimises the weighted negative log-likelihood of ``truth [H]`` under :func:`tempered`
    ``scores [H, C]`` (the per-anchor terms are computed once for every weighting; ties go to the
    lower ``T``)."""
    nll = np.asarray(weights, dtype=np.float64) @ temperature_nll(scores, truth)  # [B, T]
    return TEMPERATURES[np.argmin(nll, axis=1)].astype(np.float64)


def fit_temperature(scores: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The ``T`` of :data:`TEMPERATURES` that minimises the (weighted) negative log-likelihood of
    the true classes ``truth [H]`` under :func:`tempered` ``scores [H, C]``."""
    w = np.ones(truth.size) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(fit_temperatures(scores, truth, w[None, :])[0])


@dataclass(frozen=True)
class BatchEstimate:
    """Estimated precision of a set of suggestions: ``value`` with a 90% interval ``[low, high]``
    for the fraction that is actually right (NaN when uncalibrated), and what it rests on."""

    value: float
    low: float
    high: float
    size: int
    basis: str


def batch_estimate(probs: np.ndarray, boot_probs: np.ndarray, basis: str, extra_wrong: int = 0) -> BatchEstimate:
    """Fraction right of ``M`` suggestions whose probability of being right is ``probs [M]``
    (``boot_probs [B, M]`` under resampled calibrations), plus ``extra_wrong`` images certain to
    be wrong. The 90% interval spans the calibration's uncertainty and the Bernoulli spread of a
    finite set (normal approximation)."""
    p = np.asarray(probs, dtype=np.float64)
    m = p.size + extra_wrong
    if m == 0:
        return BatchEstimate(float("nan"), float("nan"), float("nan"), 0, basis)
    value = float(p.sum() / m)
    bp = np.asarray(boot_probs, dtype=np.float64).reshape(-1, p.size)
    sd = np.sqrt((bp * (1 - bp)).sum(1)) / m
    draws = np.clip(bp.sum(1) / m + sd * np.random.default_rng(1).standard_normal(len(bp)), 0.0, 1.0)
    lo, hi = np.quantile(draws, [0.05, 0.95]) if len(bp) else (value, value)
    return BatchEstimate(value, float(min(lo, value)), float(max(hi, value)), int(p.size), basis)


def review_bias(stated: Mapping[int, float], reviews: Mapping[int, tuple[int, int]], prior: float = 50.0) -> float:
    """How far the stated precision fell short of what review found, in reviewed rounds.

    ``stated[round]`` is the precision stated for a round's batch, ``reviews[round]`` its
    ``(accepted, rejected)`` suggestions (only rounds in which something was rejected: a batch
    accepted whole says nothing about its precision). Returns the residual
    ``Σ (accepted − stated·n) / (Σ n + prior)``: the observed-minus-stated precision per reviewed
    suggestion, shrunk toward 0 by ``prior`` suggestions' worth of doubt."""
    num, den = 0.0, prior
    for rnd, (acc, rej) in reviews.items():
        value = stated.get(rnd)
        if value is None or not math.isfinite(value):
            continue
        n = acc + rej
        num += acc - value * n
        den += n
    return num / den if den > 0 else 0.0


def expected_calibration_error(probabilities: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """ECE: ``Σ_b |B_b|/M · |mean(right) − mean(prob)|`` over equal-width bins of ``probabilities [M]``."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(right, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probabilities and right must have the same length, got {p.size} and {y.size}")
    if p.size == 0:
        return float("nan")
    which = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    err = 0.0
    for b in np.unique(which):
        sel = which == b
        err += sel.sum() / p.size * abs(float(y[sel].mean()) - float(p[sel].mean()))
    return float(err)

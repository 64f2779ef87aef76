"""kNN class confidences for suggestions: the 1-NN distance score and the weighted vote share."""

from __future__ import annotations

import numpy as np

KNN_CONFIDENCES: tuple[str, ...] = ("1nn", "vote")
VOTE_PRIOR = 1.0  # weight of the uniform prior in the vote: one neighbour's worth, spread over the classes
_MAX_EXPONENT = 30.0


def vote_temperature(nn1_distances: np.ndarray) -> float:
    """``τ`` for the distance-weighted vote: the median 1-NN squared distance ``[Q]`` of the pool.

    Guarded to be > 0: if the median is 0 (many exact duplicates), the median of the positive
    distances is used, and 1.0 if there are none.
    """
    d = np.asarray(nn1_distances, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 1.0
    tau = float(np.median(d))
    if tau > 0:
        return tau
    pos = d[d > 0]
    return float(np.median(pos)) if pos.size else 1.0


def knn_class_scores(
    distances: np.ndarray,
    neighbor_classes: np.ndarray,
    num_classes: int,
    *,
    mode: str = "vote",
    tau: float | None = None,
    prior: float = VOTE_PRIOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class kNN confidences from the neighbour lists.

    Args:
        distances: ``[Q, k]`` squared distances to the labeled neighbours, ascending.
        neighbor_classes: ``[Q, k]`` class of each neighbour, in ``[0, C)``.
        mode: ``"1nn"``: score of class ``c`` = ``1 / (1 + d_c²)`` with ``d_c²`` the distance to
            the nearest neighbour of class ``c``; ``"vote"``: ``c``'s share of the weights
            ``w_j = exp(-d_j² / τ)`` smoothed by a uniform prior,
            ``(Σ_{j: c_j = c} w_j + prior / C) / (Σ_j w_j + prior)``.
        tau: vote temperature; default :func:`vote_temperature` of ``distances[:, 0]``.
        prior: weight of the uniform prior. Without it a unanimous vote scores exactly 1 however
            far the neighbours are, so most of a pool ties at the top of the ranking; with it the
            score grows with the neighbours' closeness (at most ``(k + prior/C) / (k + prior)``)
            and falls towards ``1/C`` for images far from every labeled one.

    Returns:
        ``(scores [Q, C] float64 in [0, 1], seen [Q, C] bool)``; ``seen`` marks the classes present
        among the neighbours (the only ones a suggestion may use). In ``"1nn"`` mode other scores
        are 0; in ``"vote"`` mode they hold the prior's share, and each row sums to 1.
    """
    d = np.asarray(distances, dtype=np.float64)
    cls = np.asarray(neighbor_classes, dtype=np.int64)
    if d.ndim != 2 or d.shape != cls.shape:
        raise ValueError(
            f"distances and neighbor_classes must be [Q, k] alike, got {d.shape} and {cls.shape}"
        )
    if mode not in KNN_CONFIDENCES:
        raise ValueError(f"mode must be one of {list(KNN_CONFIDENCES)}, got {mode!r}")
    if cls.size and (cls.min() < 0 or cls.max() >= num_classes):
        raise ValueError(f"neighbor_classes must lie in [0, {num_classes})")
    if mode == "vote" and d.shape[1] > 0:
        if tau is not None and not (np.isfinite(float(tau)) and float(tau) > 0):
            raise ValueError(f"tau must be > 0, got {tau}")
        if not (np.isfinite(prior) and prior >= 0):
            raise ValueError(f"prior must be >= 0, got {prior}")
    return neighbor_class_scores(d, cls, num_classes, mode=mode, tau=tau, prior=prior)


def neighbor_class_scores(
    distances: np.ndarray,
    neighbor_classes: np.ndarray,
    num_classes: int,
    *,
    mode: str,
    tau: float | None,
    prior: float = VOTE_PRIOR,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn_class_scores` on inputs already checked: ``distances [Q, k]`` float64 ascending,
    ``neighbor_classes [Q, k]`` int64 in ``[0, C)``, a valid ``mode``, ``tau`` > 0 or ``None``,
    ``prior`` >= 0. Returns ``(scores [Q, C], seen [Q, C])``."""
    d, cls = distances, neighbor_classes
    q, k = d.shape
    scores = np.zeros((q, num_classes))
    seen = np.zeros((q, num_classes), dtype=bool)
    r = np.arange(q)
    for j in range(k):
        seen[r, cls[:, j]] = True
    if mode == "1nn":
        conf = 1.0 / (1.0 + np.maximum(d, 0.0))
        for j in reversed(range(k)):  # the nearest neighbour of each class is written last
            scores[r, cls[:, j]] = conf[:, j]
        return scores, seen
    if k == 0:
        return scores, seen
    t = vote_temperature(d[:, 0]) if tau is None else float(tau)
    # absolute weights: far neighbours count for little; the exponent is capped so that a row far
    # from every labeled image keeps its vote winner (e^-30 is still visible next to prior/C)
    w = np.exp(-np.minimum(np.maximum(d, 0.0) / t, _MAX_EXPONENT))
    if prior == 0:  # plain shares; shifted by the row minimum so that they never underflow to 0/0
        w = np.exp(-(d - d[:, :1]) / t)
    scores += prior / num_classes
    for j in range(k):
        scores[r, cls[:, j]] += w[:, j]
    scores /= w.sum(axis=1, keepdims=True) + prior
    return scores, seen

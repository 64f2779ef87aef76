"""Selecting a batch of suggestions (pure functions over arrays)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from labeltool.config import SuggestConfig


def selection_total(config: SuggestConfig, pool_size: int) -> int | None:
    """How many suggestions a batch may hold: ``ceil(p·|U|/100)`` with ``percent``, else
    ``batch_size`` (``None`` = no limit). ``pool_size`` = ``|U|``, the remaining unlabeled pool."""
    if config.percent is not None:
        # round first so that e.g. 10% of 30 is 3, not ceil(3.0000000000000004) = 4
        return int(math.ceil(round(config.percent * pool_size / 100.0, 9)))
    return config.batch_size


def select(
    image_ids: np.ndarray,
    classes: np.ndarray,
    confidences: np.ndarray,
    config: SuggestConfig,
    num_classes: int,
    *,
    pool_size: int | None = None,
    tiebreak: np.ndarray | None = None,
    shares: np.ndarray | None = None,
) -> np.ndarray:
    """Pick the batch among the candidates; returns their positions in output order.

    Args:
        image_ids, classes, confidences: ``[M]`` one candidate (best allowed class) per image.
        config: uses ``min_confidence``, ``batch_size``/``percent``, ``stratified``, ``balance``.
        num_classes: ``C`` for the stratified split.
        pool_size: ``|U|`` for ``percent`` (default ``M``).
        tiebreak: ``[M]`` optional second key, higher first, among equal confidences (e.g. a
            probability that rounds to 1.0 for many images, ranked by what it rounded away).
        shares: ``[C]`` estimated share of each class among the unlabeled images (prevalence quotas).

    Candidates below ``min_confidence`` are dropped. Global: the ``total`` most confident.
    Prevalence quotas (the default with ``shares``): class ``c`` may take ``total · shares[c]``
    of its most confident candidates (largest-remainder rounding, so the quotas sum to ``total``).
    Slots a class cannot fill (fewer candidates than its quota) go to the most confident of the
    remaining candidates, so the batch is only short when the candidates run out; every class
    still gets its quota first.
    Stratified (paper protocol, ``p·|U|/C`` per predicted class): every class may take
    ``total // C`` of its most confident candidates; the ``total mod C`` remaining slots go to the
    classes whose next candidate is the most confident (at most one extra per class), so no class
    exceeds ``ceil(total / C)`` and the batch never exceeds ``total``. Unused quota of a class with
    too few candidates is not redistributed. The result is sorted by confidence descending, ties
    by ``tiebreak`` descending, then by image id ascending.
    """
    ids = np.asarray(image_ids, dtype=np.int64)
    cls = np.asarray(classes, dtype=np.int64)
    conf = np.asarray(confidences, dtype=np.float64)
    if not (ids.shape == cls.shape == conf.shape) or ids.ndim != 1:
        raise ValueError(
            f"image_ids, classes and confidences must be [M] alike, got {ids.shape}, {cls.shape}, {conf.shape}"
        )
    if tiebreak is None:
        order = np.lexsort((ids, -conf))
    else:
        tie = np.asarray(tiebreak, dtype=np.float64)
        if tie.shape != conf.shape:
            raise ValueError(f"tiebreak must be [M] like confidences, got {tie.shape} and {conf.shape}")
        order = np.lexsort((ids, -tie, -conf))
    order = order[conf[order] >= config.min_confidence]
    total = selection_total(config, ids.size if pool_size is None else pool_size)
    if total is None:
        return order
    if config.stratified:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 for stratified selection, got {num_classes}")
        return _stratified(order, cls, total, num_classes)
    if config.balance == "prevalence" and shares is not None and float(np.sum(shares)) > 0:
        return _by_quota(order, cls, class_quotas(np.asarray(shares, dtype=np.float64), total))
    return order[:total]


def class_quotas(shares: np.ndarray, total: int) -> np.ndarray:
    """``[C]`` whole quotas summing to ``total`` in proportion to ``shares [C]`` (>= 0; largest
    remainder, ties to the lower class id). All-zero shares: no quota at all."""
    if shares.ndim != 1 or not np.isfinite(shares).all() or (shares < 0).any():
        raise ValueError(f"shares must be a [C] array of finite non-negative numbers, got {shares!r}")
    if shares.sum() <= 0 or total <= 0:
        return np.zeros(shares.size, dtype=np.int64)
    exact = shares / shares.sum() * total
    quota = np.floor(exact).astype(np.int64)
    left = int(total - quota.sum())
    order = np.lexsort((np.arange(shares.size), -(exact - quota)))
    quota[order[:left]] += 1
    return quota


def _by_quota(order: np.ndarray, cls: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """The first ``quota[c]`` candidates of each class ``c`` in ``order [M']``, topped up to
    ``quota.sum()`` with the next most confident others; in ``order``'s order."""
    ranked = cls[order]
    by_class = np.argsort(ranked, kind="stable")
    sorted_cls = ranked[by_class]
    starts = np.searchsorted(sorted_cls, sorted_cls, side="left")
    within = np.empty(order.size, dtype=np.int64)
    within[by_class] = np.arange(order.size) - starts
    limit = np.zeros(order.size, dtype=np.int64)
    known = ranked < quota.size
    limit[known] = quota[ranked[known]]
    take = within < limit
    short = int(quota.sum()) - int(take.sum())
    if short > 0:
        take[np.flatnonzero(~take)[:short]] = True
    return order[take]


def _stratified(order: np.ndarray, cls: np.ndarray, total: int, num_classes: int) -> np.ndarray:
    """The stratified share of ``order [M']`` (candidate positions in output order) given the
    classes ``cls [M]`` of all candidates: see :func:`select`."""
    quota, extra = divmod(total, num_classes)
    # rank of each candidate within its class, in confidence order
    by_class = np.argsort(cls[order], kind="stable")
    sorted_cls = cls[order][by_class]
    starts = np.searchsorted(sorted_cls, sorted_cls, side="left")
    within = np.empty(order.size, dtype=np.int64)
    within[by_class] = np.arange(order.size) - starts
    take = within < quota
    if extra:
        nxt = np.flatnonzero(within == quota)[:extra]  # already in confidence order
        take[nxt] = True
    return order[take]

"""Batch selection: stratified quotas and tie-breaking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from suggest_refs import SUGGEST_SETTINGS

from labeltool.config import SuggestConfig
from labeltool.suggest.select import class_quotas, select


@SUGGEST_SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1)), max_size=40),
    st.integers(1, 20),
    st.integers(1, 4),
)
def test_select_stratified_quota(cands: list[tuple[int, float]], total: int, c: int) -> None:
    ids = np.arange(len(cands))
    cls = np.array([k % c for k, _ in cands], dtype=np.int64)
    conf = np.array([v for _, v in cands])
    chosen = select(ids, cls, conf, SuggestConfig(batch_size=total, stratified=True), c)
    assert len(chosen) <= total
    counts = np.bincount(cls[chosen], minlength=c)
    assert counts.max(initial=0) <= math.ceil(total / c)
    # each class takes at least its floor quota when it has the candidates (no starving)
    avail = np.bincount(cls, minlength=c)
    assert np.all(counts >= np.minimum(avail, total // c))
    # within a class, the most confident are taken
    for k in range(c):
        taken = conf[chosen][cls[chosen] == k]
        rest = np.setdiff1d(np.flatnonzero(cls == k), chosen)
        if taken.size and rest.size:
            assert taken.min() >= conf[rest].max()


def test_select_breaks_confidence_ties_by_tiebreak_then_id() -> None:
    ids = np.array([10, 11, 12, 13])
    conf = np.array([0.5, 1.0, 1.0, 1.0])
    cfg = SuggestConfig(batch_size=None)
    assert ids[select(ids, np.zeros(4, int), conf, cfg, 1)].tolist() == [11, 12, 13, 10]
    tie = np.array([0.0, -3.0, -1.0, -3.0])
    assert ids[select(ids, np.zeros(4, int), conf, cfg, 1, tiebreak=tie)].tolist() == [12, 11, 13, 10]
    with pytest.raises(ValueError, match="tiebreak"):
        select(ids, np.zeros(4, int), conf, cfg, 1, tiebreak=tie[:2])


# ---------------------------------------------------------------------------- prevalence quotas
def test_class_quotas_sum_to_the_total_in_proportion() -> None:
    assert class_quotas(np.array([0.5, 0.3, 0.2]), 10).tolist() == [5, 3, 2]
    q = class_quotas(np.array([1.0, 1.0, 1.0]), 10)
    assert q.sum() == 10 and q.tolist() == [4, 3, 3]  # the remainder to the lower class id
    assert class_quotas(np.zeros(3), 10).tolist() == [0, 0, 0]


def test_prevalence_quotas_keep_a_confident_class_from_taking_over() -> None:
    ids = np.arange(20)
    cls = np.array([0] * 15 + [1] * 5)
    conf = np.concatenate([np.linspace(0.99, 0.9, 15), np.linspace(0.6, 0.5, 5)])
    cfg = SuggestConfig(batch_size=10)
    top = select(ids, cls, conf, cfg, 2)
    assert (cls[top] == 0).all()  # without shares: the confident class takes the whole batch
    half = select(ids, cls, conf, cfg, 2, shares=np.array([0.5, 0.5]))
    assert np.bincount(cls[half]).tolist() == [5, 5]
    assert list(conf[half]) == sorted(conf[half], reverse=True)  # still in confidence order
    none = select(ids, cls, conf, SuggestConfig(batch_size=10, balance="none"), 2, shares=np.array([0.5, 0.5]))
    assert none.tolist() == top.tolist()
    # a class with fewer candidates than its quota: the slots left go to the most confident others
    few = select(ids, cls, conf, cfg, 2, shares=np.array([0.1, 0.9]))
    assert np.bincount(cls[few], minlength=2).tolist() == [5, 5]
    assert set(ids[few][cls[few] == 0]) == set(range(5))  # the top five of class 0
    # every share estimated used up (all zero): no quota, the batch falls back to the most confident
    assert select(ids, cls, conf, cfg, 2, shares=np.zeros(2)).tolist() == top.tolist()

"""Estimated precision of a batch and calibration tables from past reviews."""

from __future__ import annotations

import math

import pytest

from labeltool.eval.calibration import calibration_table, estimated_precision


def test_estimated_precision() -> None:
    assert estimated_precision([0.9, 0.7, 0.5]) == pytest.approx(0.7)
    assert math.isnan(estimated_precision([]))
    table = [(0.0, 0.5, 0.1), (0.5, 1.0, 0.6)]
    assert estimated_precision([0.9, 1.0, 0.2], table) == pytest.approx((0.6 + 0.6 + 0.1) / 3)
    assert estimated_precision([0.9, 0.2], {(0.5, 1.0): 1.0}) == pytest.approx((1.0 + 0.2) / 2)
    with pytest.raises(ValueError):
        estimated_precision([0.5], [(0.6, 0.4, 0.5)])
    built = calibration_table([0.05, 0.1, 0.95, 1.0], [True, False, True, True], bins=2)
    assert built == [(0.0, 0.5, 0.5), (0.5, 1.0, 1.0)]
    assert estimated_precision([0.2, 0.99], built) == pytest.approx(0.75)

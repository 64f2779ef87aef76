"""Estimated precision of a batch and calibration tables from past reviews."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labeltool.eval.calibration import (
    TEMPERATURES,
    batch_estimate,
    calibration_table,
    estimated_precision,
    expected_calibration_error,
    fit_temperature,
    fit_temperatures,
    tempered,
)


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


# ---------------------------------------------------------------------------- tempered votes

def test_tempered_rows_are_distributions_and_sharpen_as_the_temperature_falls() -> None:
    s = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    for t in (0.1, 1.0, 3.0):
        p = tempered(s, t)
        np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(tempered(s, 1.0), s)
    assert tempered(s, 0.1)[0, 0] > 0.99 > tempered(s, 3.0)[0, 0]


def test_fit_temperature_recovers_overconfident_and_underconfident_scores() -> None:
    rng = np.random.default_rng(0)
    n, c = 4000, 4
    logits = rng.normal(size=(n, c)) * 2.0
    truth_p = tempered(np.exp(logits), 1.0)
    truth = np.array([rng.choice(c, p=p) for p in truth_p])
    # scores that are the true probabilities raised to 1/0.5 (too sharp) need T≈2 to undo
    sharp = truth_p ** 2.0
    assert fit_temperature(sharp, truth) == pytest.approx(2.0, rel=0.15)
    flat = truth_p ** 0.5
    assert fit_temperature(flat, truth) == pytest.approx(0.5, rel=0.15)


def test_fit_temperatures_minimise_each_weighted_likelihood() -> None:
    rng = np.random.default_rng(1)
    scores = rng.dirichlet(np.ones(5) * 0.4, size=60)
    truth = np.where(rng.random(60) < 0.6, scores.argmax(1), rng.integers(0, 5, 60))
    weights = rng.dirichlet(np.ones(60), size=7) * 60  # [B, H] like the bootstrap's
    got = fit_temperatures(scores, truth, weights)
    for w, t in zip(weights, got, strict=True):
        nll = [-(w * np.log(tempered(scores, u)[np.arange(60), truth])).sum() for u in TEMPERATURES]
        assert t == TEMPERATURES[int(np.argmin(nll))]
    assert fit_temperature(scores, truth) == fit_temperatures(scores, truth, np.ones((1, 60)))[0]
    assert got.shape == (7,) and len(set(got.tolist())) > 1  # the resamples do not all agree


def test_batch_estimate_value_interval_and_certain_wrong_images() -> None:
    p = np.full(100, 0.8)
    boot = np.stack([p + d for d in np.linspace(-0.05, 0.05, 41)])
    est = batch_estimate(p, boot, "basis")
    assert est.value == pytest.approx(0.8) and est.low < 0.8 < est.high and est.size == 100
    assert 0.68 < est.low and est.high < 0.92
    half = batch_estimate(p, boot, "basis", extra_wrong=100)
    assert half.value == pytest.approx(0.4)
    assert math.isnan(batch_estimate(np.zeros(0), np.zeros((3, 0)), "b").value)


def test_expected_calibration_error() -> None:
    p = np.array([0.9] * 10 + [0.3] * 10)
    right = np.array([1] * 9 + [0] + [1] * 3 + [0] * 7)
    assert expected_calibration_error(p, right) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 1.0), np.zeros(10)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        expected_calibration_error(np.ones(3), np.ones(2))


def test_review_bias_is_the_shrunk_shortfall_of_reviewed_rounds() -> None:
    from labeltool.eval.calibration import review_bias

    # stated 0.7 twice, review found 90 of 100 right each time: +0.2 per suggestion, shrunk by 50
    assert review_bias({1: 0.7, 2: 0.7}, {1: (90, 10), 2: (90, 10)}) == pytest.approx(40 / 250)
    assert review_bias({1: 0.7}, {}) == 0.0
    assert review_bias({}, {1: (90, 10)}) == 0.0  # no stated value for that round
    assert review_bias({1: 0.95}, {1: (50, 50)}, prior=0.0) == pytest.approx(-0.45)

"""Compactness metrics (W-Inter, C-Inter, WC-Intra) against hand-computed angles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labeltool.eval.compactness import c_inter, class_centers, compactness_metrics, w_inter, wc_intra
from labeltool.losses import create_loss, list_losses


def test_w_inter_hand_computed() -> None:
    # 0°, 90°, 180° directions: pair angles π/2, π, π/2 -> mean 2π/3
    w = np.array([[1.0, 0.0], [0.0, 5.0], [-2.0, 0.0]])
    assert w_inter(w) == pytest.approx(2 * math.pi / 3)
    assert w_inter(torch.tensor(w, dtype=torch.float32)) == pytest.approx(2 * math.pi / 3, abs=1e-6)


def test_equiangular_simplex_angle() -> None:
    # C points of a regular simplex: cos = -1/(C-1)
    c = 4
    simplex = np.eye(c) - 1.0 / c
    assert w_inter(simplex) == pytest.approx(math.acos(-1 / (c - 1)))
    assert c_inter(simplex) == pytest.approx(math.acos(-1 / (c - 1)))


def test_class_centers_ignore_unlabeled_and_sort_by_class() -> None:
    x = np.array([[1.0, 1.0], [3.0, 1.0], [9.0, 9.0], [0.0, 2.0], [0.0, 4.0]])
    y = np.array([2, 2, -1, 0, 0])
    centers = class_centers(x, y)
    assert centers.shape == (2, 2)
    assert np.allclose(centers.numpy(), [[0.0, 3.0], [2.0, 1.0]])


def test_wc_intra_hand_computed() -> None:
    centers = np.array([[1.0, 0.0], [1.0, 1.0]])
    weights = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert wc_intra(centers, weights) == pytest.approx((math.pi / 4 + 0.0) / 2)


def test_compactness_metrics_dict() -> None:
    x = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0], [5.0, 5.0]])
    y = np.array([0, 0, 1, -1])  # centers (1, 0) and (0, 3): 90° apart
    w = np.array([[1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    out = compactness_metrics(x, y)
    assert out == pytest.approx({"c_inter": math.pi / 2})
    out = compactness_metrics(x, y, weights=w)
    # W pair angles: 45°, 135°, 90° -> mean 90°; WC: class 0 vs W_0 45°, class 1 vs W_1 0°
    assert out == pytest.approx({"c_inter": math.pi / 2, "w_inter": math.pi / 2, "wc_intra": math.pi / 8})


def test_single_class_leaves_out_inter_metrics() -> None:
    out = compactness_metrics(np.ones((3, 2)), np.array([1, 1, -1]), weights=np.eye(2))
    assert set(out) == {"w_inter", "wc_intra"}
    assert out["wc_intra"] == pytest.approx(math.pi / 4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: w_inter(np.ones(3)), "2-D"),
        (lambda: w_inter(np.ones((1, 3))), "at least 2"),
        (lambda: c_inter(np.array([[1.0, np.nan], [0.0, 1.0]])), "NaN"),
        (lambda: wc_intra(np.ones((2, 3)), np.ones((3, 3))), "same shape"),
        (lambda: class_centers(np.ones((3, 2)), np.array([0, 1])), "labels"),
        (lambda: class_centers(np.ones((2, 2)), np.array([0.5, 1.0])), "integer"),
        (lambda: compactness_metrics(np.ones((2, 2)), np.array([0, 3]), weights=np.eye(2)), "no row"),
        (lambda: compactness_metrics(np.ones((2, 2)), np.array([0, 1]), weights=np.ones((2, 3))), "dim"),
    ],
)
def test_validation_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_works_with_loss_class_weights() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(20, 4), torch.arange(20) % 3
    for name in list_losses():
        loss = create_loss(name, num_classes=3, embedding_dim=4)
        weights = loss.class_weights()
        if weights is None:
            continue
        out = compactness_metrics(x, y, weights=weights)
        assert set(out) == {"c_inter", "w_inter", "wc_intra"}
        assert all(0.0 <= v <= math.pi for v in out.values())

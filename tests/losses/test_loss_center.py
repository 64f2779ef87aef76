"""Center loss: value against numpy, the paper's center update, and the gradient of the center term."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labeltool.losses import create_loss


def numpy_center(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, c: np.ndarray, lam: float
) -> float:
    ce = 0.0
    for i in range(len(y)):
        logits = w @ x[i] + b
        logits = logits - logits.max()
        ce += -(logits[y[i]] - math.log(np.exp(logits).sum()))
    pull = np.mean([0.5 * np.sum((x[i] - c[y[i]]) ** 2) for i in range(len(y))])
    return ce / len(y) + lam * pull


def make_loss(lam: float = 0.003):
    loss = create_loss("center", num_classes=2, embedding_dim=2, lam=lam)
    with torch.no_grad():
        loss.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        loss.classifier.bias.zero_()
        loss.centers.copy_(torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
    return loss


def test_center_term_hand_computed() -> None:
    loss = make_loss()
    x = torch.tensor([[3.0, 1.0], [-1.0, 2.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 0])
    # ‖x - c‖² = 4, 4, 0 -> ½ · mean = ½ · 8/3
    assert float(loss.center_term(x, y)) == pytest.approx(4.0 / 3.0)


def test_value_matches_numpy_and_eval_does_not_move_centers() -> None:
    loss = make_loss(lam=0.5).eval()
    x = np.array([[3.0, 1.0], [-1.0, 2.0], [0.5, -1.0]], dtype=np.float32)
    y = np.array([0, 1, 1])
    before = loss.centers.clone()
    got = float(loss(torch.from_numpy(x), torch.from_numpy(y)).detach())
    expected = numpy_center(x, y, np.eye(2), np.zeros(2), before.numpy(), 0.5)
    assert got == pytest.approx(expected, rel=1e-6)
    assert torch.equal(loss.centers, before)


def test_training_forward_applies_paper_center_update() -> None:
    loss = make_loss().train()
    x = torch.tensor([[3.0, 1.0], [-1.0, 2.0], [1.0, 3.0]])
    y = torch.tensor([0, 1, 0])
    c0 = loss.centers.clone().numpy()
    loss(x, y)
    # Δc_j = Σ_{y_i=j} (c_j - x_i) / (1 + n_j); c_j -= 0.5 Δc_j
    expected = c0.copy()
    for j in range(2):
        members = x.numpy()[y.numpy() == j]
        delta = np.sum(c0[j] - members, axis=0) / (1 + len(members))
        expected[j] = c0[j] - 0.5 * delta
    assert np.allclose(loss.centers.numpy(), expected)
    assert "centers" in loss.state_dict()


def test_center_term_gradient_pulls_features_to_centers() -> None:
    loss = make_loss(lam=1.0).eval()
    loss.classifier.weight.data.zero_()  # isolate the center term (CE gradient is zero)
    x = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    loss(x, y).backward()
    # d/dx_i of ½ · mean ‖x - c‖² = (x_i - c_{y_i}) / B
    assert torch.allclose(x.grad, (x.detach() - loss.centers[y]) / 2)

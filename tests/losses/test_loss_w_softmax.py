"""W-Softmax: α = 0 is normalised-weight softmax; α > 0 against an explicit numpy construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labeltool.losses import create_loss


def numpy_w_softmax(x: np.ndarray, w: np.ndarray, y: np.ndarray, alpha: float) -> float:
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(y)):
        logits = np.empty(len(w))
        for j in range(len(w)):
            if j == y[i]:
                logits[j] = w[j] @ x[i]
            else:
                biased = w[j] + alpha * w[y[i]]
                logits[j] = (biased / np.linalg.norm(biased)) @ x[i]
        total += -(logits[y[i]] - math.log(np.exp(logits).sum()))
    return total / len(y)


def test_alpha_zero_is_normalised_weight_softmax() -> None:
    torch.manual_seed(0)
    loss = create_loss("w_softmax", num_classes=4, embedding_dim=3, alpha=0.0)
    x, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    expected = F.cross_entropy(x @ F.normalize(loss.weight, dim=1).T, y)
    assert torch.allclose(loss(x, y), expected, atol=1e-6)


def test_hand_computed_alpha_one() -> None:
    # W_0=(1,0), W_1=(0,1); x=(1,1) class 0: positive 1, negative (W_1+W_0)/√2·x = √2.
    loss = create_loss("w_softmax", num_classes=2, embedding_dim=2, alpha=1.0)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    got = float(loss(torch.tensor([[1.0, 1.0]]), torch.tensor([0])).detach())
    assert got == pytest.approx(math.log(1 + math.exp(math.sqrt(2) - 1)), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5])
def test_matches_numpy_reference(alpha: float) -> None:
    rng = np.random.default_rng(int(alpha * 10))
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=5)
    loss = create_loss("w_softmax", num_classes=3, embedding_dim=3, alpha=alpha)
    w = loss.weight.detach().numpy().copy()
    got = float(loss(torch.from_numpy(x), torch.from_numpy(y)).detach())
    assert got == pytest.approx(numpy_w_softmax(x, w, y, alpha), rel=1e-5, abs=1e-6)


def test_larger_alpha_larger_margin_and_test_logits_unbiased() -> None:
    # For x = Ŵ_y, a biased negative gives (g + α) / sqrt(1 + α² + 2αg) with g = Ŵ_j·Ŵ_y,
    # strictly increasing in α when |g| < 1: the loss grows with α (a larger margin).
    values = []
    for alpha in (0.0, 0.5, 1.0, 2.0):
        torch.manual_seed(2)
        loss = create_loss("w_softmax", num_classes=3, embedding_dim=3, alpha=alpha)
        x, y = F.normalize(loss.weight.detach(), dim=1), torch.tensor([0, 1, 2])
        values.append(float(loss(x, y).detach()))
        assert torch.allclose(loss.logits(x), x @ F.normalize(loss.weight, dim=1).T)
    assert all(a < b for a, b in zip(values[:-1], values[1:], strict=True)), values

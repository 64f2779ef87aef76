"""ArcGrad: numpy reference, and finite loss and gradients under bf16 autocast at cos = ±1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labeltool.losses import create_loss


def numpy_arcgrad(x: np.ndarray, w: np.ndarray, y: np.ndarray, s: float) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(y)):
        theta = np.arccos(np.clip(w @ x[i], -1 + 1e-7, 1 - 1e-7))
        logits = s * (math.pi - theta)
        logits = logits - logits.max()
        total += -(logits[y[i]] - math.log(np.exp(logits).sum()))
    return total / len(y)


def test_hand_computed() -> None:
    # x at 45° between W_0 and W_1 (90° apart), third class opposite W_0 (135° from x).
    loss = create_loss("arcgrad", num_classes=3, embedding_dim=2, scale=10.0)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    got = float(loss(torch.tensor([[1.0, 1.0]]), torch.tensor([0])).detach())
    # logits -10·θ: θ = π/4, π/4, 3π/4 -> softmax target share 1 / (2 + e^{-5π})
    assert got == pytest.approx(math.log(2 + math.exp(-5 * math.pi)), rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_matches_numpy_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=5)
    loss = create_loss("arcgrad", num_classes=3, embedding_dim=3, scale=6.0)
    w = loss.weight.detach().numpy().copy()
    got = float(loss(torch.from_numpy(x), torch.from_numpy(y)).detach())
    assert got == pytest.approx(numpy_arcgrad(x, w, y, 6.0), rel=1e-5)


def test_finite_under_bf16_autocast_with_cosines_at_plus_minus_one() -> None:
    loss = create_loss("arcgrad", num_classes=3, embedding_dim=3)
    with torch.no_grad():
        loss.weight.copy_(torch.eye(3))
    x = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 3.0], [-1.0, 0.0, 0.0]], requires_grad=True
    )
    y = torch.tensor([0, 1, 2, 1])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = loss(x, y)
        logits = loss.logits(x)
    assert value.dtype == torch.float32 and logits.dtype == torch.float32
    assert torch.isfinite(value) and torch.isfinite(logits).all()
    value.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(loss.weight.grad).all()
    expected = numpy_arcgrad(x.detach().numpy(), np.eye(3, dtype=np.float32), y.numpy(), 10.0)
    assert float(value.detach()) == pytest.approx(expected, rel=1e-4)


def test_angles_are_exact_at_the_clamp() -> None:
    loss = create_loss("arcgrad", num_classes=2, embedding_dim=2)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    theta = loss.angles(torch.tensor([[5.0, 0.0]])).detach()
    assert theta[0, 0] < 1e-3 and abs(float(theta[0, 1]) - math.pi) < 1e-3

"""ArcFace against a numpy reference and pytorch-metric-learning's ArcFaceLoss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labeltool.losses import create_loss


def numpy_arcface(x: np.ndarray, w: np.ndarray, y: np.ndarray, s: float, m: float) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(y)):
        cos = w @ x[i]
        theta = math.acos(float(np.clip(cos[y[i]], -1, 1)))
        logits = s * cos.astype(np.float64)
        if theta + m <= math.pi:
            logits[y[i]] = s * math.cos(theta + m)
        else:
            logits[y[i]] = s * (cos[y[i]] - m * math.sin(m))
        logits -= logits.max()
        total += -(logits[y[i]] - math.log(np.exp(logits).sum()))
    return total / len(y)


def test_hand_computed_two_classes() -> None:
    # x at 60° from W_0 and 30° from W_1: target logit s·cos(π/3 + 0.5), other s·cos(π/6).
    loss = create_loss("arcface", num_classes=2, embedding_dim=2, scale=4.0)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[math.cos(math.pi / 3), math.sin(math.pi / 3)]]) * 3.0
    got = float(loss(x, torch.tensor([0])).detach())
    target, other = 4.0 * math.cos(math.pi / 3 + 0.5), 4.0 * math.cos(math.pi / 6)
    assert got == pytest.approx(math.log(1 + math.exp(other - target)), rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_matches_numpy_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=6)
    loss = create_loss("arcface", num_classes=3, embedding_dim=3, scale=8.0, margin=0.4)
    w = loss.weight.detach().numpy().copy()
    got = float(loss(torch.from_numpy(x), torch.from_numpy(y)).detach())
    assert got == pytest.approx(numpy_arcface(x, w, y, 8.0, 0.4), rel=1e-5, abs=1e-5)


def test_threshold_branch_for_obtuse_target() -> None:
    # x opposite to W_y: θ_y = π > π - m, the insightface fallback cos θ - m sin m applies.
    x = np.array([[-1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    w = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y = np.array([0, 1])
    loss = create_loss("arcface", num_classes=2, embedding_dim=2, scale=4.0)
    with torch.no_grad():
        loss.weight.copy_(torch.from_numpy(w))
    got = float(loss(torch.from_numpy(x), torch.from_numpy(y)).detach())
    assert got == pytest.approx(numpy_arcface(x, w, y, 4.0, 0.5), rel=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_matches_pytorch_metric_learning(seed: int) -> None:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    torch.manual_seed(seed)
    num_classes, dim = 4, 3
    ours = create_loss("arcface", num_classes=num_classes, embedding_dim=dim, scale=64.0, margin=0.5)
    ref = pml_losses.ArcFaceLoss(num_classes, dim, margin=math.degrees(0.5), scale=64)
    with torch.no_grad():
        ref.W.copy_(ours.weight.T)  # pytorch-metric-learning stores W as [D, C]
    x = torch.randn(10, dim)
    # include rows past the threshold: exactly opposite to their class vector
    x[0] = -ours.weight[1].detach()
    x[1] = -ours.weight[2].detach() * 3
    y = torch.tensor([1, 2, 0, 1, 2, 3, 3, 0, 1, 2])
    expected = float(ref(x, y).detach())
    assert float(ours(x, y).detach()) == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert torch.allclose(ours.logits(x).detach(), ref.get_logits(x).detach(), atol=1e-4)


def test_inference_logits_have_no_margin() -> None:
    loss = create_loss("arcface", num_classes=3, embedding_dim=2)
    x = torch.randn(4, 2)
    cos = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(loss.weight).T
    assert torch.allclose(loss.logits(x), 30.0 * cos, atol=1e-5)

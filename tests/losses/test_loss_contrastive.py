"""Contrastive loss against a loop-based numpy reference and a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeltool.losses import create_loss


def numpy_contrastive(x: np.ndarray, y: np.ndarray, margin: float) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    terms = []
    for i in range(len(y)):
        for j in range(i + 1, len(y)):
            d = np.linalg.norm(x[i] - x[j])
            terms.append(d**2 if y[i] == y[j] else max(0.0, margin - d) ** 2)
    return float(np.mean(terms))


def test_hand_computed() -> None:
    # (1,0) & (0,1) same class: d²=2. (1,0) & (0.8,0.6) different: d²=0.4, d≈0.632 -> (1-d)².
    # (0,1) & (0.8,0.6) different: d²=0.8, d≈0.894 -> (1-d)². Mean of the three pairs.
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.8, 0.6]])
    y = torch.tensor([1, 1, 0])
    expected = (2.0 + (1 - 0.4**0.5) ** 2 + (1 - 0.8**0.5) ** 2) / 3
    got = float(create_loss("contrastive", num_classes=2, embedding_dim=2)(x, y))
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_matches_numpy_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=5)
    loss = create_loss("contrastive", num_classes=2, embedding_dim=3, margin=1.3)
    got = float(loss(torch.from_numpy(x), torch.from_numpy(y)))
    assert got == pytest.approx(numpy_contrastive(x, y, 1.3), abs=1e-5)


def test_identical_points_have_finite_gradient() -> None:
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]], requires_grad=True)
    value = create_loss("contrastive", num_classes=2, embedding_dim=2)(x, torch.tensor([0, 0, 1]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    assert float(value.detach()) == pytest.approx(1.0 / 3 * 2, abs=1e-5)  # two dissimilar pairs at d=0

"""Learning by Association: walker/visit/logit losses against a loop-based numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labeltool.losses import create_loss
from labeltool.losses.association import round_trip, visit_loss, walker_loss


def softmax_rows(m: np.ndarray) -> np.ndarray:
    e = np.exp(m - m.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def numpy_walker_visit(a: np.ndarray, ya: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    m = a @ b.T
    p_ab, p_ba = softmax_rows(m), softmax_rows(m.T)
    p_aba = p_ab @ p_ba
    walker = 0.0
    for i in range(len(ya)):
        same = [j for j in range(len(ya)) if ya[j] == ya[i]]
        walker += -sum(math.log(p_aba[i, j] + 1e-8) / len(same) for j in same)
    visit_prob = p_ab.mean(axis=0)
    visit = -float(np.mean(np.log(visit_prob + 1e-8)))
    return walker / len(ya), visit


def test_hand_computed_two_by_two() -> None:
    # A = {(1,0) class 0, (0,1) class 1}, B = A: M = I, P^{ab} = P^{ba} = [[q, 1-q], [1-q, q]],
    # q = e/(e+1); P^{aba}_ii = q² + (1-q)²; visit probabilities uniform -> visit = log 2.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p_ab, p_aba = round_trip(a @ a.T)
    q = math.e / (math.e + 1)
    assert float(walker_loss(p_aba, torch.tensor([0, 1]))) == pytest.approx(
        -math.log(q**2 + (1 - q) ** 2 + 1e-8)
    )
    assert float(visit_loss(p_ab)) == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_full_loss_matches_numpy_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = np.array([0, 1, 0, -1, -1, -1])
    loss = create_loss("association", num_classes=2, embedding_dim=3, visit_weight=0.3, logit_weight=0.7)
    lab = y >= 0
    walker, visit = numpy_walker_visit(x[lab], y[lab], x[~lab])
    w, bias = loss.classifier.weight.detach().numpy(), loss.classifier.bias.detach().numpy()
    logits = x[lab] @ w.T + bias
    logit = float(np.mean([-(logits[i, y[lab][i]] - math.log(np.exp(logits[i]).sum())) for i in range(3)]))
    got = float(loss(torch.from_numpy(x), torch.from_numpy(y)).detach())
    assert got == pytest.approx(walker + 0.3 * visit + 0.7 * logit, rel=1e-5)


def test_walker_lower_for_class_consistent_associations() -> None:
    torch.manual_seed(0)
    centers = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]])
    ya = torch.arange(3).repeat(4)
    a = centers[ya] + 0.3 * torch.randn(12, 2)
    b = centers[torch.arange(3).repeat(5)] + 0.3 * torch.randn(15, 2)
    _, p_aba = round_trip(a @ b.T)
    consistent = float(walker_loss(p_aba, ya))
    shuffled = float(walker_loss(p_aba, ya[torch.randperm(12, generator=torch.Generator().manual_seed(1))]))
    assert consistent < shuffled - 0.5


def test_without_unlabeled_rows_only_the_logit_loss() -> None:
    torch.manual_seed(0)
    loss = create_loss("association", num_classes=3, embedding_dim=4)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(loss(x, y), F.cross_entropy(loss.classifier(x), y))
    assert torch.allclose(loss.logits(x), loss.classifier(x))

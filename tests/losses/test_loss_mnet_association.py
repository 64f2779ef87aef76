"""Mnet association: pair network shape, each term against numpy, and the triplet direction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from labeltool.losses import create_loss
from labeltool.losses.mnet_association import PairMetric, similarity_triplet

TERMS = ("walker", "visit", "logit", "comparison", "sup_triplet", "semi_triplet", "weak_triplet")


class FixedScores(nn.Module):
    """Stands in for Mnet: returns a given score matrix [nA, nA + nB]."""

    def __init__(self, scores: Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        assert self.scores.shape == (a.shape[0], b.shape[0])
        return self.scores


def only(term: str, **extra: float):
    flags = {f"use_{t}": t == term for t in TERMS}
    return create_loss("mnet_association", num_classes=2, embedding_dim=2, **flags, **extra)


def softmax_rows(m: np.ndarray) -> np.ndarray:
    e = np.exp(m - m.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def np_triplet(p: np.ndarray, pos: np.ndarray, neg: np.ndarray, m: float) -> float:
    terms = [
        max(0.0, p[i, k] - p[i, j] + m)
        for i in range(p.shape[0])
        for j in range(p.shape[1])
        for k in range(p.shape[1])
        if pos[i, j] and neg[i, k]
    ]
    return float(np.mean(terms))


# labeled rows 0..3 (classes 0, 1, 0, 1), unlabeled rows 4..6
Y = np.array([0, 1, 0, 1, -1, -1, -1])
S = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32) * 2


def run_term(term: str, margin: float = 1.5) -> float:
    loss = only(term, triplet_margin=margin)
    loss.mnet = FixedScores(torch.from_numpy(S))
    return float(loss(torch.randn(7, 2), torch.from_numpy(Y)).detach())


def test_each_term_matches_numpy() -> None:
    ya = Y[:4]
    s_aa, s_ab = S[:, :4], S[:, 4:]
    same = ya[:, None] == ya[None, :]
    target = same / same.sum(axis=1, keepdims=True)
    pos, neg = same & ~np.eye(4, dtype=bool), ~same
    p_ab, p_ba = softmax_rows(s_ab), softmax_rows(s_ab.T)
    p_aba = p_ab @ p_ba
    comparison = -np.mean(np.sum(target * np.log(softmax_rows(s_aa)), axis=1))
    walker = -np.mean(np.sum(target * np.log(p_aba + 1e-8), axis=1))
    visit = -np.mean(np.log(p_ab.mean(axis=0) + 1e-8))
    q = np.stack([sigmoid(s_ab)[ya == c].mean(axis=0) for c in (0, 1)]).T  # [nB, C]
    q_pos = np.eye(2, dtype=bool)[q.argmax(axis=1)]
    expected = {
        "comparison": comparison,
        "walker": walker,
        "visit": visit,
        "sup_triplet": np_triplet(sigmoid(s_aa), pos, neg, 0.3),
        "semi_triplet": np_triplet(p_aba, pos, neg, 0.3),
        "weak_triplet": np_triplet(q, q_pos, ~q_pos, 0.3),
    }
    for term, value in expected.items():
        assert run_term(term, margin=0.3) == pytest.approx(value, rel=1e-5), term


def test_similarity_triplet_penalises_negative_more_similar_than_positive() -> None:
    pos = torch.tensor([[False, True, False]])
    neg = torch.tensor([[False, False, True]])
    good = torch.tensor([[1.0, 0.9, 0.1]], requires_grad=True)
    bad = torch.tensor([[1.0, 0.1, 0.9]])
    g = similarity_triplet(good, pos, neg, 0.5)
    assert float(g.detach()) == pytest.approx(0.0)  # max(0, 0.1 - 0.9 + 0.5)
    assert float(similarity_triplet(bad, pos, neg, 0.5)) == pytest.approx(1.3)  # 0.9 - 0.1 + 0.5
    p = torch.tensor([[1.0, 0.4, 0.6]], requires_grad=True)
    similarity_triplet(p, pos, neg, 1.5).backward()
    assert p.grad[0, 2] > 0 and p.grad[0, 1] < 0  # descent lowers p_neg, raises p_pos


def cube_triplet(p: Tensor, pos: Tensor, neg: Tensor, m: float) -> Tensor:
    """The definition on the full [n, j, k] cube, with autograd (reference for values and gradients)."""
    mask = pos[:, :, None] & neg[:, None, :]
    hinge = torch.relu(p[:, None, :] - p[:, :, None] + m)
    return (hinge * mask).sum() / mask.sum().clamp(min=1)


@pytest.mark.parametrize("trial", range(40))
def test_similarity_triplet_matches_the_cube_in_value_and_gradient(trial: int) -> None:
    gen = torch.Generator().manual_seed(trial)
    n, k = (int(v) for v in torch.randint(1, 24, (2,), generator=gen))
    p = torch.rand(n, k, generator=gen, dtype=torch.float64)
    if trial % 2:
        p = (p * 4).round() / 4  # many ties, some exactly at the margin
    pos = torch.rand(n, k, generator=gen) < 0.3
    neg = ~pos & (torch.rand(n, k, generator=gen) < 0.8)
    m = (0.0, 0.25, 0.5, 1.5)[trial % 4]
    fast, ref = p.clone().requires_grad_(), p.clone().requires_grad_()
    value, expected = similarity_triplet(fast, pos, neg, m), cube_triplet(ref, pos, neg, m)
    assert float(value.detach()) == pytest.approx(float(expected.detach()), abs=1e-12)
    value.backward()
    expected.backward()
    grad = fast.grad if fast.grad is not None else torch.zeros_like(p)
    assert torch.allclose(grad, ref.grad, atol=1e-12)


def test_sup_triplet_direction_through_the_loss() -> None:
    ya = torch.tensor([0, 0, 1, 1])
    same = (ya[:, None] == ya[None, :]).float()
    aligned = torch.where(same.bool(), 4.0, -4.0)  # high similarity within a class
    losses = {}
    for name, scores in (("aligned", aligned), ("inverted", -aligned)):
        loss = only("sup_triplet")
        loss.mnet = FixedScores(scores)
        losses[name] = float(loss(torch.randn(4, 2), ya).detach())
    assert losses["aligned"] < losses["inverted"]
    s = 1 / (1 + math.exp(-4.0))
    assert losses["aligned"] == pytest.approx((1 - s) - s + 1.5, rel=1e-5)


def test_pair_metric_is_an_mlp_on_concatenated_pairs() -> None:
    torch.manual_seed(0)
    net = PairMetric(3).eval()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    a, b = torch.randn(4, 3), torch.randn(5, 3)
    pairs = torch.cat([a[:, None, :].expand(4, 5, 3), b[None, :, :].expand(4, 5, 3)], dim=2).reshape(20, 6)
    explicit = net.rest(torch.relu(net.first_norm(net.first(pairs)))).reshape(4, 5)
    assert torch.allclose(net(a, b), explicit, atol=1e-5)
    widths = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
    assert widths == [64, 32, 32, 16, 16, 1]


def test_gradients_reach_mnet_and_unlabeled_rows() -> None:
    torch.manual_seed(0)
    loss = create_loss("mnet_association", num_classes=2, embedding_dim=3)
    x = torch.randn(7, 3, requires_grad=True)
    loss(x, torch.from_numpy(Y)).backward()
    assert x.grad[4:].abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss.mnet.parameters())

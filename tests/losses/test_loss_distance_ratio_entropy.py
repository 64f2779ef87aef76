"""Hoffer & Ailon distance-ratio + min-entropy loss against hand-computed and numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labeltool.losses import create_loss
from labeltool.losses.distance_ratio_entropy import pick_references

EPS = 1e-8


def numpy_loss(x: np.ndarray, y: np.ndarray, refs: np.ndarray, lam_l: float, lam_u: float) -> float:
    ref_classes = list(y[refs])
    sup, unsup = [], []
    for i in range(len(y)):
        if i in refs:
            continue
        d = np.array([math.sqrt(np.sum((x[i] - x[r]) ** 2) + EPS) for r in refs])
        p = np.exp(-d) / np.exp(-d).sum()
        if y[i] >= 0:
            sup.append(-math.log(p[ref_classes.index(y[i])]))
        else:
            unsup.append(-np.sum(p * np.log(p)))
    total = 0.0
    if sup:
        total += lam_l * float(np.mean(sup))
    if unsup:
        total += lam_u * float(np.mean(unsup))
    return total


def test_distance_ratio_hand_computed() -> None:
    # class 0: two identical rows at the origin (either can be the reference); class 1 at (3, 4).
    # The non-reference class-0 row: distances ≈ 0 and 5 -> -log P_0 = log(1 + e^{-5}).
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    y = torch.tensor([0, 0, 1])
    loss = create_loss("distance_ratio_entropy", num_classes=2, embedding_dim=2)
    got = float(loss(x, y).detach())
    expected = -math.log(
        math.exp(-math.sqrt(EPS)) / (math.exp(-math.sqrt(EPS)) + math.exp(-math.sqrt(25 + EPS)))
    )
    assert got == pytest.approx(expected, rel=1e-4)
    assert expected == pytest.approx(math.log(1 + math.exp(-5)), rel=1e-3)


def test_entropy_zero_for_one_hot_and_log2_for_even_split() -> None:
    # One labeled row per class, so the references are fixed; unlabeled rows only.
    loss = create_loss("distance_ratio_entropy", num_classes=2, embedding_dim=2, lambda_labeled=0.0)
    refs = torch.tensor([[0.0, 0.0], [1000.0, 0.0]])
    one_hot = torch.cat([refs, torch.tensor([[0.0, 0.0], [1000.0, 0.0]])])
    y = torch.tensor([0, 1, -1, -1])
    assert float(loss(one_hot, y).detach()) == pytest.approx(0.0, abs=1e-6)
    even = torch.cat([refs, torch.tensor([[500.0, 3.0]])])
    value = float(loss(even, torch.tensor([0, 1, -1])).detach())
    assert value == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_matches_numpy_reference_with_the_same_draw(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 2)).astype(np.float32)
    y = np.array([0, 0, 1, 1, -1, -1])
    refs = pick_references(torch.from_numpy(y), torch.Generator().manual_seed(seed)).numpy()
    loss = create_loss(
        "distance_ratio_entropy", num_classes=2, embedding_dim=2, seed=seed, lambda_unlabeled=0.5
    )
    got = float(loss(torch.from_numpy(x), torch.from_numpy(y)).detach())
    assert got == pytest.approx(numpy_loss(x, y, refs, 1.0, 0.5), rel=1e-5)


def test_pick_references_one_per_present_class_and_random() -> None:
    y = torch.tensor([2, 0, -1, 2, 2, 0, -1, 2])
    gen = torch.Generator().manual_seed(0)
    seen: set[tuple[int, ...]] = set()
    for _ in range(30):
        refs = pick_references(y, gen)
        assert y[refs].tolist() == [0, 2]
        seen.add(tuple(refs.tolist()))
    assert len(seen) > 3  # redrawn each step
    again = pick_references(y, torch.Generator().manual_seed(5))
    assert torch.equal(again, pick_references(y, torch.Generator().manual_seed(5)))
    assert pick_references(torch.tensor([-1, -1])).numel() == 0

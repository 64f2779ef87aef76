"""Sample weights and the shared reducer, checked for every registered loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from labeltool.losses import EmbeddingLoss, create_loss, get_loss_class, list_losses
from labeltool.losses.base import ROW_LOCAL_KINDS, LossTerm, reduce_terms, softmax_ce_terms

NAMES = list_losses()
C, D = 3, 5


def _fresh(name: str) -> EmbeddingLoss:
    """The same loss (same parameters, same reference draws) each call."""
    torch.manual_seed(0)
    return create_loss(name, num_classes=C, embedding_dim=D)


def _batch(seed: int = 0, n: int = 40) -> tuple[Tensor, Tensor]:
    """``[n, D]`` embeddings and labels ``[n]``: every class at least twice, a quarter unlabeled."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=gen) * 2
    y = torch.arange(n) % C
    y[torch.randperm(n, generator=gen)[: n // 4]] = -1
    y[:C * 2] = torch.arange(C * 2) % C
    return x, y


def _weights(n: int, seed: int = 1) -> Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) + 0.1


def _kinds(name: str) -> set[str]:
    return set(get_loss_class(name).term_kinds.values())


def _value_and_grad(loss: EmbeddingLoss, x: Tensor, y: Tensor, w: Tensor | None) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_(True)
    value = loss(x, y, w)
    value.backward()
    assert x.grad is not None
    return value.detach(), x.grad


@pytest.mark.parametrize("name", NAMES)
def test_all_ones_weights_give_exactly_the_unweighted_loss(name: str) -> None:
    x, y = _batch()
    plain, g_plain = _value_and_grad(_fresh(name), x, y, None)
    ones, g_ones = _value_and_grad(_fresh(name), x, y, torch.ones(len(y)))
    assert torch.equal(plain, ones), (plain, ones)
    assert torch.allclose(g_plain, g_ones, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_weighted_value_follows_the_term_kinds(name: str) -> None:
    """``Σ_t scale_t Σ_e w_e v_e / Σ_e w_e``; pairs and triplets weigh the product of their rows,
    batch terms ignore the weights."""
    x, y = _batch(3)
    w = _weights(len(y))
    loss = _fresh(name)
    keep = torch.ones_like(y, dtype=torch.bool) if loss.uses_unlabeled else y >= 0
    terms = loss.compute(x[keep], y[keep])
    assert terms, "the batch has something to learn from"
    w_kept = w[keep]
    expected = torch.zeros(())
    for term in terms:
        kind = loss.term_kinds[term.name]
        if kind == "batch":
            assert term.values.ndim == 0
            expected = expected + term.scale * term.values
            continue
        if term.rows is None:
            w_e = w_kept
        elif term.rows.dtype == torch.bool or term.rows.ndim == 1:
            w_e = w_kept[term.rows]
        else:
            assert term.rows.shape[1] == {"pair": 2, "triplet": 3}[kind]
            w_e = w_kept[term.rows].prod(dim=1)
        assert w_e.shape == term.values.shape
        expected = expected + term.scale * (w_e * term.values).sum() / w_e.sum()
    value = _fresh(name)(x, y, w)
    assert torch.allclose(value, expected, rtol=1e-5, atol=1e-6), (value, expected)
    if any(loss.term_kinds[t.name] != "batch" for t in terms):
        assert not torch.allclose(value, _fresh(name)(x, y)), "the weights must change the value"


ROW_LOCAL = [n for n in NAMES if _kinds(n) <= ROW_LOCAL_KINDS]


def test_losses_with_terms_over_other_rows_declare_them() -> None:
    """Every loss either has only row-local terms (tested below) or declares an anchor or batch term."""
    others = [n for n in NAMES if n not in ROW_LOCAL]
    assert others and all(_kinds(n) & {"anchor", "batch"} for n in others)
    assert {"association", "distance_ratio_entropy", "mnet_association"} == set(others)


@pytest.mark.parametrize("name", ROW_LOCAL)
def test_zero_weight_removes_a_rows_gradient_where_the_loss_is_per_sample(name: str) -> None:
    x, y = _batch(5)
    w = _weights(len(y))
    k = 0  # labeled
    w[k] = 0.0
    _, grad = _value_and_grad(_fresh(name), x, y, w)
    assert torch.equal(grad[k], torch.zeros(D))
    assert grad[1:][y[1:] >= 0].abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in NAMES if _kinds(n) <= {"sample", "pair"}])
def test_zero_weight_equals_dropping_the_row(name: str) -> None:
    x, y = _batch(7)
    w = torch.ones(len(y))
    w[2] = 0.0
    rest = torch.arange(len(y)) != 2
    assert torch.allclose(_fresh(name)(x, y, w), _fresh(name)(x[rest], y[rest]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", [n for n in NAMES if _kinds(n) == {"sample"}])
def test_weight_two_counts_a_row_twice(name: str) -> None:
    x, y = _batch(8)
    w = torch.ones(len(y))
    w[1] = 2.0
    twice = torch.cat([torch.arange(len(y)), torch.tensor([1])])
    assert torch.allclose(_fresh(name)(x, y, w), _fresh(name)(x[twice], y[twice]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_all_zero_weights_are_finite(name: str) -> None:
    x, y = _batch(9)
    value, grad = _value_and_grad(_fresh(name), x, y, torch.zeros(len(y)))
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    if "batch" not in _kinds(name):
        assert float(value) == 0.0 and float(grad.abs().sum()) == 0.0


@pytest.mark.parametrize("name", [n for n in NAMES if not get_loss_class(n).uses_unlabeled])
def test_supervised_losses_ignore_the_weights_of_unlabeled_rows(name: str) -> None:
    x, y = _batch(10)
    w = _weights(len(y))
    other = w.clone()
    other[y < 0] = 7.0
    assert torch.equal(_fresh(name)(x, y, w), _fresh(name)(x, y, other))


def test_weights_are_checked() -> None:
    loss = create_loss("cross_entropy", num_classes=2, embedding_dim=2)
    x, y = torch.zeros(3, 2), torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match="sample weights"):
        loss(x, y, torch.ones(4))
    with pytest.raises(ValueError, match="sample weights"):
        loss(x, y, torch.ones(3, dtype=torch.int64))


def test_every_declared_kind_is_known_and_undeclared_terms_are_refused() -> None:
    for name in NAMES:
        assert get_loss_class(name).term_kinds, f"{name} declares no terms"
    with pytest.raises(TypeError, match="unknown term kinds"):
        type("Bad", (EmbeddingLoss,), {"term_kinds": {"x": "per_row"}})
    term = LossTerm("mystery", torch.ones(2))
    with pytest.raises(KeyError, match="mystery"):
        reduce_terms([term], {"ce": "sample"}, None, torch.zeros(2, 2))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_terms_are_bit_identical_to_torch(smoothing: float) -> None:
    gen = torch.Generator().manual_seed(0)
    logits, y = torch.randn(150, 7, generator=gen) * 3, torch.randint(0, 7, (150,), generator=gen)
    terms = softmax_ce_terms(logits, y, label_smoothing=smoothing)
    kinds = {"ce": "sample", "ce_smoothing": "sample"}
    value = reduce_terms(terms, kinds, None, logits)  # type: ignore[arg-type]
    assert torch.equal(value, F.cross_entropy(logits, y, label_smoothing=smoothing))
    weighted = reduce_terms(terms, kinds, torch.ones(150), logits)  # type: ignore[arg-type]
    assert torch.equal(weighted, value)


def test_center_update_uses_the_weights() -> None:
    x, y = _batch(11)
    plain, ones, zero_first = _fresh("center"), _fresh("center"), _fresh("center")
    plain(x, y)
    ones(x, y, torch.ones(len(y)))
    assert torch.equal(plain.centers, ones.centers)
    w = torch.ones(len(y))
    w[y == 0] = 0.0  # class 0's rows carry no weight: its center stays where it was
    zero_first(x, y, w)
    assert torch.equal(zero_first.centers[0], torch.zeros(D))
    assert torch.equal(zero_first.centers[1:], plain.centers[1:])
    assert not torch.equal(plain.centers[0], torch.zeros(D))


STATE_KEYS = {
    "arcface": {"weight"},
    "arcgrad": {"weight"},
    "w_softmax": {"weight"},
    "cross_entropy": {"classifier.weight", "classifier.bias"},
    "association": {"classifier.weight", "classifier.bias"},
    "center": {"classifier.weight", "classifier.bias", "centers"},
    "contrastive": set(),
    "triplet": set(),
    "distance_ratio_entropy": set(),
}


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_are_those_of_saved_checkpoints(name: str) -> None:
    keys = set(_fresh(name).state_dict())
    if name == "mnet_association":
        assert {"classifier.weight", "classifier.bias"} <= keys
        assert all(k.startswith(("classifier.", "mnet.")) for k in keys)
        return
    assert keys == STATE_KEYS[name]

"""Registry-wide checks: every loss is finite, passes gradients and learns a toy problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labeltool.losses import HyperParam, create_loss, get_loss_class, list_losses

EXPECTED = {
    "arcface",
    "arcgrad",
    "association",
    "center",
    "contrastive",
    "cross_entropy",
    "distance_ratio_entropy",
    "mnet_association",
    "triplet",
    "w_softmax",
}
CENTERS = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]])


def test_all_losses_registered() -> None:
    assert EXPECTED <= set(list_losses())


def toy_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """4 gaussian clusters: class signal in 2 of 8 input dims, strong noise in the other 6."""
    y = torch.arange(n) % 4
    x = torch.randn(n, 8, generator=gen) * 2.5
    x[:, :2] = CENTERS[y] + 0.7 * torch.randn(n, 2, generator=gen)
    return x, y


def one_nn_accuracy(
    head: nn.Module,
    ref: torch.Tensor,
    ref_y: torch.Tensor,
    query: torch.Tensor,
    query_y: torch.Tensor,
    norm: bool,
) -> float:
    with torch.no_grad():
        e_ref, e_q = head(ref), head(query)
        if norm:
            e_ref, e_q = nn.functional.normalize(e_ref, dim=1), nn.functional.normalize(e_q, dim=1)
        nearest = torch.cdist(e_q, e_ref).argmin(dim=1)
        return float((ref_y[nearest] == query_y).float().mean())


@pytest.mark.parametrize("name", sorted(EXPECTED | set(list_losses())))
def test_loss_finite_with_gradient(name: str) -> None:
    torch.manual_seed(0)
    loss = create_loss(name, num_classes=3, embedding_dim=5)
    x = torch.randn(14, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, -1, -1, -1, -1, 2, -1])
    value = loss(x, y)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad[y >= 0].abs().sum() > 0
    if loss.uses_unlabeled:
        assert x.grad[y < 0].abs().sum() > 0, "a semi-supervised loss must use the unlabeled rows"
    else:
        assert x.grad[y < 0].abs().sum() == 0, "a supervised loss must ignore unlabeled rows"
    for p in loss.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", sorted(EXPECTED | set(list_losses())))
def test_loss_degenerate_batches(name: str) -> None:
    loss = create_loss(name, num_classes=3, embedding_dim=4)
    for y in ([-1, -1, -1], [1, 1, 1], [2], [0, -1]):
        x = torch.randn(len(y), 4, requires_grad=True)
        value = loss(x, torch.tensor(y))
        assert torch.isfinite(value), (y, value)
        value.backward()
        assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", sorted(EXPECTED | set(list_losses())))
def test_loss_learns_toy_problem(name: str) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x_train, y_train = toy_data(128, gen)
    x_test, y_test = toy_data(200, gen)
    labels = y_train.clone()
    labels[64:] = -1  # half of the training rows unlabeled
    head = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 8))
    loss = create_loss(name, num_classes=4, embedding_dim=8)
    params = list(head.parameters()) + list(loss.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    norm = loss.normalize_embeddings
    before = one_nn_accuracy(head, x_train[:64], y_train[:64], x_test, y_test, norm)
    for _ in range(100):
        idx = torch.randperm(128)[:64]
        value = loss(head(x_train[idx]), labels[idx])
        opt.zero_grad()
        value.backward()
        opt.step()
    after = one_nn_accuracy(head, x_train[:64], y_train[:64], x_test, y_test, norm)
    assert after > before + 0.2 and after >= 0.8, (before, after)


@pytest.mark.parametrize("name", sorted(EXPECTED | set(list_losses())))
def test_classifier_contract(name: str) -> None:
    loss = create_loss(name, num_classes=3, embedding_dim=4)
    x = torch.randn(5, 4)
    if not loss.has_classifier:
        with pytest.raises(NotImplementedError):
            loss.logits(x)
        assert loss.class_weights() is None
        return
    assert loss.logits(x).shape == (5, 3)
    weights = loss.class_weights()  # every loss with a classifier exposes its class vectors
    assert weights is not None and weights.shape == (3, 4)


def test_config_round_trip() -> None:
    for name in list_losses():
        loss = create_loss(name, num_classes=3, embedding_dim=4)
        cfg = loss.config()
        again = create_loss(
            cfg["name"], num_classes=cfg["num_classes"], embedding_dim=cfg["embedding_dim"], **cfg["hyper"]
        )
        assert again.hparams == loss.hparams
        for p in get_loss_class(name).hyperparams:
            assert p.validate(p.default) == p.default, (name, p.name)


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        create_loss("nope", num_classes=2, embedding_dim=2)
    for name in ("triplet", "arcface", "mnet_association", "cross_entropy"):
        assert name in str(err.value)


def test_unknown_hyperparameter_rejected() -> None:
    with pytest.raises(ValueError, match="no hyperparameter"):
        create_loss("arcface", num_classes=2, embedding_dim=2, nope=1.0)


def test_hyperparameter_range_checked() -> None:
    with pytest.raises(ValueError, match="above the maximum"):
        create_loss("w_softmax", num_classes=2, embedding_dim=2, alpha=5.0)
    with pytest.raises(ValueError, match="below the minimum"):
        create_loss("arcgrad", num_classes=2, embedding_dim=2, scale=1.0)
    assert create_loss("arcface", num_classes=2, embedding_dim=2, scale="64").hparams["scale"] == 64.0


def test_hyperparam_validate_errors() -> None:
    p = HyperParam("k", 3, "int", 1, 10)
    assert p.validate("4") == 4
    with pytest.raises(ValueError, match="whole number"):
        p.validate(2.5)
    with pytest.raises(ValueError, match="expected a number"):
        p.validate("abc")
    with pytest.raises(ValueError, match="below the minimum"):
        p.validate(0)
    flag = HyperParam("f", True, "bool")
    assert flag.validate("off") is False and flag.validate("yes") is True
    with pytest.raises(ValueError, match="true/false"):
        flag.validate("maybe")
    choice = HyperParam("c", "a", "choice", choices=("a", "b"))
    with pytest.raises(ValueError, match="is not one of"):
        choice.validate("z")


def test_bad_sizes_and_shapes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        create_loss("triplet", num_classes=0, embedding_dim=2)
    loss = create_loss("triplet", num_classes=2, embedding_dim=2)
    with pytest.raises(ValueError, match="expected embeddings"):
        loss(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))

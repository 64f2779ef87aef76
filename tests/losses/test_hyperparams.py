"""Tests for HyperParam.validate: every registered loss refuses non-finite hyperparameters up front."""

from __future__ import annotations

import pytest

from labeltool.losses import create_loss, get_loss_class, list_losses
from labeltool.losses.base import HyperParam

NUMERIC = [(loss, p.name) for loss in list_losses() for p in get_loss_class(loss).hyperparams
           if p.kind in ("float", "int")]


@pytest.mark.parametrize(("loss", "name"), NUMERIC)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan"), float("inf")])
def test_non_finite_hyperparameters_are_refused(loss: str, name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{name}: (must be a finite number|expected a number)"):
        create_loss(loss, num_classes=3, embedding_dim=4, **{name: value})


def test_an_int_hyperparameter_refuses_infinity_without_a_traceback() -> None:
    p = HyperParam("k", 3, "int", 1, None)
    with pytest.raises(ValueError, match="expected a number"):
        p.validate(float("inf"))  # int(inf) raises OverflowError
    assert p.validate("7") == 7 and HyperParam("m", 0.5).validate("0.25") == 0.25

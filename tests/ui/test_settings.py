"""The sidebar's view models: choices from the registries, defaults from the config dataclasses."""

from __future__ import annotations

import pytest

from labeltool.config import FinetuneConfig, SuggestConfig, TrainConfig
from labeltool.losses import get_loss_class, list_losses
from labeltool.suggest.registry import list_sources, source_info
from labeltool.ui.settings import (
    REVIEW_BATCH,
    Control,
    capped_min_steps,
    hyper_controls,
    knn_confidence_sources,
    loss_catalog,
    loss_control,
    source_choices,
    suggest_config_from,
    suggest_controls,
    train_config_from,
    train_controls,
)


def _defaults(controls: tuple[Control, ...], **given: object) -> dict[str, object]:
    """Values of the controls a page would show, starting on their defaults (``given`` first)."""
    values: dict[str, object] = dict(given)
    for c in controls:
        if c.key not in values and c.shown(values):
            values[c.key] = c.default
    return values


def test_sources_needing_probabilities_are_offered_only_with_a_classifier() -> None:
    catalog = loss_catalog()
    assert sorted(catalog) == list_losses()
    needs_probs = {s for s in list_sources() if source_info(s).needs_probs}
    assert "softmax" in needs_probs
    for name, info in catalog.items():
        assert info.has_classifier == get_loss_class(name).has_classifier
        offered = set(suggest_controls(info.has_classifier)[0].choices)
        assert offered == (set(list_sources()) if info.has_classifier else set(list_sources()) - needs_probs)
        assert ("softmax" in offered) == info.has_classifier
        assert suggest_controls(info.has_classifier)[0].choices == source_choices(info.has_classifier)
    assert any(i.has_classifier for i in catalog.values()) and not all(i.has_classifier for i in catalog.values())


def test_confidence_choice_is_enabled_only_for_sources_that_use_it() -> None:
    conf = next(c for c in suggest_controls(True) if c.key == "knn_conf")
    assert set(knn_confidence_sources()) == {"knn", "knn+walk"}
    for s in list_sources():
        assert conf.enabled({"source": s}) == source_info(s).uses_knn_confidence
    assert conf.default == SuggestConfig().confidence


def test_batch_size_and_percent_exclude_each_other() -> None:
    items = {c.key: c for c in suggest_controls(True)}
    assert items["batch_size"].enabled({"batch_by": "size"}) and not items["percent"].enabled({"batch_by": "size"})
    assert items["percent"].enabled({"batch_by": "percent of pool"})
    assert not items["batch_size"].enabled({"batch_by": "percent of pool"})
    by_size = suggest_config_from(_defaults(suggest_controls(True)))
    assert by_size == SuggestConfig(batch_size=REVIEW_BATCH)
    by_percent = suggest_config_from(_defaults(suggest_controls(True), batch_by="percent of pool"))
    assert by_percent.batch_size is None and by_percent.percent == items["percent"].default


def test_training_defaults_are_the_config_defaults() -> None:
    loss = loss_control(list_losses())
    assert loss.default == TrainConfig().loss
    controls = hyper_controls(loss.default) + train_controls(default_dim=64)
    cfg = train_config_from(loss.default, _defaults(controls))
    hyper = {p.name: p.default for p in get_loss_class(loss.default).hyperparams}
    # the app's default mode is auto (held-out accuracy picks head or end to end); the rest as TrainConfig's
    assert cfg == TrainConfig(loss_params=hyper, mode="auto", finetune={"consistency": 0.0})
    assert cfg.min_steps == TrainConfig().min_steps


def test_finetune_settings_show_only_in_finetune_mode() -> None:
    controls = train_controls(default_dim=64)
    finetune = [c for c in controls if c.key.startswith("ft_")]
    assert len(finetune) == 6
    assert not any(c.shown({"mode": "head"}) for c in finetune)
    assert all(c.shown({"mode": "finetune"}) for c in finetune)
    assert [c.key for c in finetune if c.shown({"mode": "auto"})] == ["ft_consistency"]
    cfg = train_config_from("triplet", _defaults(controls, mode="finetune"))
    assert cfg.backbone is None  # the project's backbone unless a small network is picked
    scratch = train_config_from("triplet", _defaults(controls, mode="finetune", ft_network="hoffer_mnist",
                                                     ft_consistency=1.0))
    assert scratch.backbone == "hoffer_mnist" and scratch.finetune_config().consistency == 1.0
    ft = FinetuneConfig()
    assert cfg.finetune_config().stages == ft.stages and cfg.finetune_config().epochs == ft.epochs
    assert cfg.finetune_config().backbone_lr == ft.backbone_lr and cfg.finetune_config().augment == ft.augment
    assert train_config_from("triplet", _defaults(controls, mode="head")).finetune is None


def test_min_steps_never_exceeds_max_steps() -> None:
    assert capped_min_steps(20) == 20
    assert capped_min_steps(10**6) == TrainConfig().min_steps
    values = _defaults(train_controls(default_dim=64), max_steps=20)
    assert train_config_from("cross_entropy", values).min_steps == 20


def test_every_hyperparameter_gets_a_control_of_its_kind() -> None:
    for name in list_losses():
        params = get_loss_class(name).hyperparams
        controls = hyper_controls(name)
        assert [c.label for c in controls] == [p.name for p in params]
        for c, p in zip(controls, params, strict=True):
            assert c.key == f"hp_{name}_{p.name}"
            if p.kind == "int":
                assert isinstance(c.default, int) and c.kind == "int"
            elif p.kind == "float":
                assert isinstance(c.default, float) and c.kind == "float"


def test_numeric_controls_use_one_number_type() -> None:
    c = Control("x", "x", "float", 1, 0, 5)
    assert (type(c.default), type(c.low), type(c.high)) == (float, float, float)
    s = Control("k", "k", "slider", 5, 3, 15)
    assert (type(s.default), type(s.low)) == (int, int)
    assert type(Control("m", "m", "slider", 0.0, 0, 1, step=0.01).low) is float


def test_bad_values_raise() -> None:
    values = _defaults(train_controls(default_dim=64), lr=-1.0)
    with pytest.raises(ValueError, match="lr"):
        train_config_from("cross_entropy", values)
    with pytest.raises(ValueError, match="source"):
        suggest_config_from(_defaults(suggest_controls(True), source="nope"))

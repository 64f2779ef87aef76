"""The sidebar's settings as data: which controls to show, their defaults, and the configs they make.

Defaults come from the config dataclasses (:mod:`labeltool.config`) and the loss and
suggestion-source registries; the app renders the :class:`Control` rows as they are and hands
the values back to :func:`train_config_from` / :func:`suggest_config_from`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from labeltool.config import NEW_PROJECT_MODE, TRAIN_MODES, FinetuneConfig, SuggestConfig, TrainConfig
from labeltool.losses import HyperParam, get_loss_class, list_losses
from labeltool.models.backbones import from_scratch_backbones
from labeltool.suggest.knn_scores import KNN_CONFIDENCES
from labeltool.suggest.registry import list_sources, source_info

ControlKind = Literal["bool", "int", "float", "choice", "radio", "slider", "segmented"]

TRAIN = TrainConfig()
FINETUNE = FinetuneConfig()
SUGGEST = SuggestConfig()
BATCH_BY = ("size", "percent of pool")
REVIEW_BATCH = 48  # a batch of suggestions fills one review page of the default size
POOL_PERCENT = 5.0  # the "percent of the pool" input's starting value (SuggestConfig.percent is None: unused)
PROJECT_NETWORK = "project backbone"  # the network choice meaning "the project's own backbone"
CONTINUE_TRAINING = True  # a round starts from the previous round's head unless told otherwise


@dataclass(frozen=True)
class Control:
    """One input of the sidebar.

    ``shown_if`` / ``enabled_if``: ``(key, values)``; the control is shown (enabled) only while the
    control ``key`` holds one of ``values``. ``group`` names the section it belongs to.
    """

    key: str
    label: str
    kind: ControlKind
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    help: str | None = None
    fmt: str | None = None
    step: float | None = None
    group: str = "main"
    shown_if: tuple[str, tuple[Any, ...]] | None = None
    enabled_if: tuple[str, tuple[Any, ...]] | None = None

    def __post_init__(self) -> None:
        if self.kind in ("int", "float", "slider"):  # one numeric type for bounds, default and step
            whole = self.kind == "int" or (self.kind == "slider" and isinstance(self.default, int))
            num: type = int if whole else float
            for name in ("low", "high", "default", "step"):
                if getattr(self, name) is not None:
                    object.__setattr__(self, name, num(getattr(self, name)))

    def shown(self, values: Mapping[str, Any]) -> bool:
        """Whether to render it, given the values of the controls rendered before it."""
        return self.shown_if is None or values.get(self.shown_if[0]) in self.shown_if[1]

    def enabled(self, values: Mapping[str, Any]) -> bool:
        """Whether it takes input, given the values of the controls rendered before it."""
        return self.enabled_if is None or values.get(self.enabled_if[0]) in self.enabled_if[1]

    @property
    def index(self) -> int:
        """Position of the default among ``choices`` (choice and radio controls)."""
        return list(self.choices).index(self.default)


# ---------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class LossInfo:
    """What the sidebar needs to render a loss's controls."""

    name: str
    hyperparams: tuple[HyperParam, ...]
    uses_unlabeled: bool
    has_classifier: bool
    doc: str

    @property
    def caption(self) -> str:
        """One line under the loss choice: what it learns from and what suggests with it."""
        kind = "semi-supervised · " if self.uses_unlabeled else "supervised · "
        return kind + ("classifier head" if self.has_classifier else "no classifier (kNN / walk suggestions)")


def loss_catalog() -> dict[str, LossInfo]:
    """Every registered loss, by name."""
    out = {}
    for name in list_losses():
        cls = get_loss_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        out[name] = LossInfo(name, tuple(cls.hyperparams), bool(cls.uses_unlabeled), bool(cls.has_classifier),
                             doc[0] if doc else "")
    return out


def loss_control(names: Sequence[str]) -> Control:
    """The loss choice, starting on the default loss."""
    return Control("loss", "Loss", "choice", TRAIN.loss if TRAIN.loss in names else names[0], choices=tuple(names))


def hyper_controls(loss: str) -> tuple[Control, ...]:
    """One control per hyperparameter of ``loss`` (keys ``hp_<loss>_<name>``)."""
    kinds: dict[str, ControlKind] = {"bool": "bool", "choice": "choice", "int": "int"}
    return tuple(
        Control(hyper_key(loss, p.name), p.name, kinds.get(p.kind, "float"), p.default, p.low, p.high,
                tuple(p.choices), p.help or None, fmt=None if p.kind in kinds else "%g")
        for p in get_loss_class(loss).hyperparams
    )


def hyper_key(loss: str, name: str) -> str:
    """Widget key of one hyperparameter of one loss."""
    return f"hp_{loss}_{name}"


# ---------------------------------------------------------------------------- training
def train_controls(default_dim: int) -> tuple[Control, ...]:
    """Mode, fine-tune settings (fine-tune mode only), schedule, and the ``advanced`` group."""
    finetune = ("mode", ("finetune",))
    end_to_end = ("mode", ("finetune", "auto"))
    return (
        Control("mode", "Mode", "radio", NEW_PROJECT_MODE, choices=default_first(TRAIN_MODES, NEW_PROJECT_MODE),
                help="auto: picks a head on frozen features or a network trained end to end, by accuracy on "
                     "held-out labels (says which and why); head: a projection head on cached backbone features "
                     "(seconds); finetune: the backbone's last stages are trained on the images too (use a GPU)"),
        Control("ft_network", "Network", "choice", PROJECT_NETWORK, choices=(PROJECT_NETWORK, *from_scratch_backbones()),
                shown_if=finetune, help="the project's backbone, or a small network trained from scratch "
                                        "(28-32 px images: digits, characters, small crops)"),
        Control("ft_consistency", "Consistency weight (0 = off)", "float", FINETUNE.consistency, 0.0, 10.0,
                fmt="%g", shown_if=end_to_end,
                help="end-to-end training also learns from unlabeled images: a strongly augmented view is "
                     "trained toward the confident prediction of a weakly augmented one (FixMatch)"),
        Control("ft_stages", "Backbone stages to train (0 = all)", "int", FINETUNE.stages, 0, 20, shown_if=finetune),
        Control("ft_epochs", "Fine-tune epochs", "int", FINETUNE.epochs, 1, 200, shown_if=finetune),
        Control("ft_lr", "Backbone learning rate", "float", FINETUNE.backbone_lr, 1e-7, 1.0, fmt="%g",
                shown_if=finetune),
        Control("ft_augment", "Augment (random crops, flips)", "bool", FINETUNE.augment, shown_if=finetune),
        Control("epochs", "Epochs (head)", "int", TRAIN.epochs, 1, 500),
        Control("dim", "Embedding dimension (0 = automatic)", "int", TRAIN.embedding_dim or 0, 0, 4096,
                help=f"automatic = max(C-1, 64) = {default_dim}"),
        Control("lr", "Learning rate", "float", TRAIN.lr, 1e-6, 1.0, fmt="%g", group="advanced"),
        Control("hidden", "Hidden width", "int", TRAIN.hidden_dim, 8, 8192, group="advanced"),
        Control("max_steps", "Max steps", "int", TRAIN.max_steps, 1, 100000, group="advanced"),
        Control("seed", "Seed", "int", TRAIN.seed, 0, 2**31 - 1, group="advanced"),
        Control("continue", "Continue from the previous round", "bool", CONTINUE_TRAINING, group="advanced"),
    )


def default_first(choices: Sequence[str], default: str) -> tuple[str, ...]:
    """``choices`` with ``default`` moved to the front (the order a menu or ``--help`` lists them in)."""
    return (default, *(c for c in choices if c != default))


def capped_min_steps(max_steps: int) -> int:
    """The default minimum number of steps, never above ``max_steps``."""
    return min(TRAIN.min_steps, int(max_steps))


def embedding_dim(value: int | None) -> int | None:
    """The embedding-dimension input as a config value: 0 (or None) means automatic."""
    return int(value) if value else None


def train_config_from(loss: str, values: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of the sidebar's values (keys of :func:`train_controls` and
    :func:`hyper_controls`); ``ValueError`` when a value is invalid."""
    params = {p.name: values[hyper_key(loss, p.name)] for p in get_loss_class(loss).hyperparams
              if hyper_key(loss, p.name) in values}
    mode = values.get("mode", NEW_PROJECT_MODE)
    finetune: dict[str, Any] | None = None
    network = None
    if mode != "head":
        finetune = {"consistency": float(values.get("ft_consistency", FINETUNE.consistency))}
    if mode == "finetune" and finetune is not None:
        finetune.update({"stages": int(values["ft_stages"]), "epochs": int(values["ft_epochs"]),
                         "backbone_lr": float(values["ft_lr"]), "augment": bool(values["ft_augment"])})
        chosen = values.get("ft_network", PROJECT_NETWORK)
        network = None if chosen == PROJECT_NETWORK else str(chosen)
    max_steps = int(values["max_steps"])
    return TrainConfig(loss=loss, loss_params=params, embedding_dim=embedding_dim(values["dim"]),
                       epochs=int(values["epochs"]), lr=float(values["lr"]), hidden_dim=int(values["hidden"]),
                       max_steps=max_steps, min_steps=capped_min_steps(max_steps), seed=int(values["seed"]),
                       mode=mode, finetune=finetune, backbone=network)


# ---------------------------------------------------------------------------- suggestions
def source_choices(has_classifier: bool) -> tuple[str, ...]:
    """Registered sources usable with a loss: one that reads class probabilities needs a classifier."""
    return tuple(s for s in list_sources() if has_classifier or not source_info(s).needs_probs)


def knn_confidence_sources() -> tuple[str, ...]:
    """Sources whose confidence is the kNN one (the confidence choice applies to them only)."""
    return tuple(s for s in list_sources() if source_info(s).uses_knn_confidence)


def sources_help() -> str:
    """Help text of the source choice: one line per registered source."""
    return "; ".join(f"{s}: {source_info(s).help}" for s in list_sources())


def suggest_controls(has_classifier: bool) -> tuple[Control, ...]:
    """Source, kNN confidence (kNN sources only), k, batch size or percent, stratified, minimum."""
    sources = source_choices(has_classifier)
    by_size = ("batch_by", (BATCH_BY[0],))
    return (
        Control("source", "Source", "choice", SUGGEST.source if SUGGEST.source in sources else sources[0],
                choices=sources, help=sources_help()),
        Control("knn_conf", "kNN confidence", "choice", SUGGEST.confidence, choices=KNN_CONFIDENCES,
                enabled_if=("source", knn_confidence_sources())),
        Control("k", "k (neighbours)", "int", SUGGEST.k, 1, 200),
        Control("batch_by", "Batch by", "radio", BATCH_BY[0], choices=BATCH_BY),
        Control("batch_size", "Batch size", "int", REVIEW_BATCH, 1, 100000, enabled_if=by_size),
        Control("percent", "Percent of the unlabeled pool", "float", POOL_PERCENT, 0.1, 100.0,
                enabled_if=("batch_by", BATCH_BY[1:])),
        Control("stratified", "Stratified per predicted class", "bool", SUGGEST.stratified),
        Control("min_conf", "Minimum confidence", "slider", SUGGEST.min_confidence, 0.0, 1.0, step=0.01),
    )


def suggest_config_from(values: Mapping[str, Any]) -> SuggestConfig:
    """The :class:`SuggestConfig` of the sidebar's values (keys of :func:`suggest_controls`)."""
    by_size = values.get("batch_by", BATCH_BY[0]) == BATCH_BY[0]
    return SuggestConfig(source=values["source"], confidence=values["knn_conf"], k=int(values["k"]),
                         batch_size=int(values["batch_size"]) if by_size else None,
                         percent=None if by_size else float(values["percent"]),
                         stratified=bool(values["stratified"]), min_confidence=float(values["min_conf"]))


def setting_choices() -> dict[str, tuple[str, ...]]:
    """Valid values of the settings that are choices: suggestion source, kNN confidence, training mode."""
    return {"source": tuple(list_sources()), "confidence": tuple(KNN_CONFIDENCES), "train_mode": tuple(TRAIN_MODES)}

"""The frozen configurations of a project, a training round and a suggestion batch, with their
defaults: the one place defaults live. The CLI and the app read their choices and defaults from
these classes (and from the loss, backbone and source registries).

Each config validates itself on construction and round-trips through JSON, so a saved round
can be reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from labeltool.data.decode import DEFAULT_MAX_PIXELS
from labeltool.losses import get_loss_class
from labeltool.models.backbones import DEFAULT_BACKBONE, BackboneSpec, from_scratch_backbones, get_spec
from labeltool.suggest.knn_scores import KNN_CONFIDENCES
from labeltool.suggest.registry import list_sources

__all__ = [
    "AMP_MODES", "BALANCE_MODES", "NEW_PROJECT_MODE", "REVIEWERS", "SCRATCH_STEPS", "SOURCES", "ExportConfig", "SelftrainConfig", "TRAIN_MODES", "FinetuneConfig", "ProjectConfig", "SuggestConfig", "TrainConfig",
]

TRAIN_MODES = ("head", "finetune", "auto")
# what the app and the command line train with unless told otherwise (TrainConfig() itself
# stays "head": a program asks for the choice, and its cost, explicitly)
NEW_PROJECT_MODE = "auto"
# steps of a from-scratch network's round unless set: a round's budget on a CPU (about 5 minutes
# for hoffer_mnist); the network continues across rounds (one run of 1,500 steps reached 98.6% on
# MNIST with 100 labels, benchmarks/README.md section 5)
SCRATCH_STEPS = 600
BALANCE_MODES = ("prevalence", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
SOURCES: tuple[str, ...] = tuple(list_sources())  # the registered suggestion sources, sorted


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class ProjectConfig:
    """Per-project settings fixed at creation (changing the backbone starts a new feature cache)."""

    backbone: str = DEFAULT_BACKBONE
    image_size: int | None = None  # None → the backbone's native size
    checkpoint: str | None = None  # local weights for 'timm:<arch>' backbones
    max_pixels: int = DEFAULT_MAX_PIXELS
    embed_batch_size: int = 32

    def __post_init__(self) -> None:
        get_spec(self.backbone, image_size=self.image_size, checkpoint=self.checkpoint)  # validates
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        if self.embed_batch_size < 1:
            raise ValueError(f"embed_batch_size must be positive, got {self.embed_batch_size}")

    @staticmethod
    def from_json(data: dict[str, Any]) -> ProjectConfig:
        known = {k: v for k, v in data.items() if k in ProjectConfig.__dataclass_fields__}
        return ProjectConfig(**known)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fine-tuning run (stored with the round inside ``TrainConfig.finetune``).

    ``stages``: how many of the backbone's last stages to train (0 or ``"all"``: every stage).
    ``steps`` overrides ``epochs`` (an epoch = enough P x K batches to cover the labeled images
    once). ``seed=None`` and ``device="auto"`` take the round's ``TrainConfig`` values.
    Defaults that depend on the backbone come from :meth:`for_backbone` (``finetune`` applies it).

    ``holdout``: fraction of the labeled images held out (stratified) to stop early on: every
    ``eval_every`` steps the held-out images are scored by 1-NN against the training labeled
    ones; the best state is kept, and training stops after ``patience`` evaluations without
    improvement (0 = off). ``consistency``: weight of a FixMatch term on ``unlabeled_batch``
    unlabeled images per step, pseudo-labels kept where the weak view's confidence reaches
    ``consistency_threshold`` (0 = off; see :mod:`labeltool.train.consistency`).
    """

    stages: int | str = 2
    epochs: int = 5
    steps: int | None = None
    classes_per_batch: int = 16  # P
    samples_per_class: int = 4  # K
    unlabeled_batch: int = 64
    backbone_lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    max_grad_norm: float | None = 10.0
    amp: str = "auto"
    augment: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    num_workers: int | None = None
    seed: int | None = None
    device: str = "auto"
    holdout: float = 0.0
    eval_every: int = 50
    patience: int = 4
    consistency: float = 0.0
    consistency_threshold: float = 0.95

    def __post_init__(self) -> None:
        stages = self.stages
        if isinstance(stages, str):
            if stages.strip().lower() != "all" and not stages.strip().isdigit():
                raise ValueError(f"stages must be a whole number or 'all', got {stages!r}")
            stages = 0 if stages.strip().lower() == "all" else int(stages)
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 0:
            raise ValueError(f"stages must be 0/'all' or a positive whole number, got {self.stages!r}")
        object.__setattr__(self, "stages", stages)
        for name in ("epochs", "classes_per_batch", "samples_per_class"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and int(self.steps) < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.unlabeled_batch < 0:
            raise ValueError(f"unlabeled_batch must be >= 0, got {self.unlabeled_batch}")
        for name in ("backbone_lr", "head_lr"):
            v = float(getattr(self, name))
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive number, got {v}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {list(AMP_MODES)}, got {self.amp!r}")
        lo, hi = (float(v) for v in self.crop_scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        object.__setattr__(self, "crop_scale", (lo, hi))
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 or None, got {self.num_workers}")
        self._check_holdout_and_consistency()

    def _check_holdout_and_consistency(self) -> None:
        if not 0.0 <= float(self.holdout) < 1.0:
            raise ValueError(f"holdout must be a fraction in [0, 1) of the labeled images, got {self.holdout}")
        for name in ("eval_every", "patience"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {getattr(self, name)!r}")
        if not (float(self.consistency) >= 0 and math.isfinite(self.consistency)):
            raise ValueError(f"consistency (the unlabeled term's weight) must be >= 0, got {self.consistency}")
        if not 0.0 < float(self.consistency_threshold) <= 1.0:
            raise ValueError(f"consistency_threshold must lie in (0, 1], got {self.consistency_threshold}")
        if self.consistency > 0 and self.unlabeled_batch < 1:
            raise ValueError("consistency training needs unlabeled images: set unlabeled_batch >= 1")

    def for_backbone(self, spec: BackboneSpec) -> FinetuneConfig:
        """This config with the backbone's defaults filled in; fields set away from their class
        default are kept (a field equal to its default counts as not set).

        A backbone trained from random weights (``spec.pretrained`` False) trains every stage
        (``stages=0``) at the head's learning rate (``backbone_lr = head_lr``), with the weight
        decay its spec names (``spec.extra["weight_decay"]``, else the default), for
        ``SCRATCH_STEPS`` steps unless steps or epochs were set (5 epochs of 100 labels are 15
        steps: nothing for a network that starts from noise). A pretrained one
        keeps the class defaults (its last 2 stages at a 10x lower learning rate).
        """
        if spec.pretrained:
            return self
        default = FinetuneConfig()
        changes: dict[str, Any] = {}
        if self.stages == default.stages:
            changes["stages"] = 0
        if self.backbone_lr == default.backbone_lr:
            changes["backbone_lr"] = self.head_lr
        if self.weight_decay == default.weight_decay:
            changes["weight_decay"] = float(spec.extra.get("weight_decay", default.weight_decay))
        if self.steps is None and self.epochs == default.epochs:
            changes["steps"] = SCRATCH_STEPS
        return replace(self, **changes) if changes else self

    @staticmethod
    def from_mapping(data: Mapping[str, Any] | None) -> FinetuneConfig:
        """Build from a JSON mapping; unknown keys raise ``ValueError`` listing the valid ones."""
        data = dict(data or {})
        valid = {f.name for f in fields(FinetuneConfig)}
        bad = sorted(set(data) - valid)
        if bad:
            raise ValueError(f"unknown fine-tune setting(s) {bad}; valid: {sorted(valid)}")
        return FinetuneConfig(**data)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        return d


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a head-training run (saved with each round)."""

    loss: str = "cross_entropy"
    loss_params: Mapping[str, Any] = field(default_factory=dict)
    embedding_dim: int | None = None  # None → max(C - 1, 64)
    hidden_dim: int = 512
    dropout: float = 0.1
    epochs: int = 15
    classes_per_batch: int = 16  # P
    samples_per_class: int = 16  # K (a class with fewer labeled images gives all of them)
    unlabeled_batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    min_steps: int = 300  # small seeds: enough steps whatever the epoch count
    max_steps: int = 1000  # large label sets: a continued round needs a few epochs, not 15
    mode: str = "head"  # "head" | "finetune" | "auto" (chosen per round by held-out accuracy)
    finetune: Mapping[str, Any] | None = None  # FinetuneConfig fields (finetune and auto modes)
    backbone: str | None = None  # the network a fine-tune round trains; None = the project's backbone

    def __post_init__(self) -> None:
        if self.mode not in TRAIN_MODES:
            raise ValueError(f"unknown training mode {self.mode!r}; valid: {', '.join(TRAIN_MODES)}")
        if self.mode != "head" or self.finetune is not None:

            # validated and completed with defaults, so the saved JSON reproduces the run
            object.__setattr__(self, "finetune", FinetuneConfig.from_mapping(self.finetune).to_json())
        if self.backbone is not None:
            spec = get_spec(self.backbone)  # raises for unknown names
            if spec.pretrained:
                raise ValueError(
                    f"a round's own backbone must be a network trained from scratch ({', '.join(from_scratch_backbones())}); "
                    f"{self.backbone!r} is pretrained: make it the project's backbone instead")
            if self.mode == "head":
                raise ValueError(f"{self.backbone!r} starts from random weights: train it with mode 'finetune' or 'auto'")
        cls = get_loss_class(self.loss)  # raises for unknown names
        known = {p.name for p in cls.hyperparams}
        bad = sorted(set(self.loss_params) - known)
        if bad:
            raise ValueError(f"loss {self.loss!r} has no hyperparameter(s) {bad}; valid: {sorted(known)}")
        for name in ("hidden_dim", "epochs", "classes_per_batch", "samples_per_class", "min_steps", "max_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.embedding_dim is not None and self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be at least 1, got {self.embedding_dim}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def resolved_dim(self, num_classes: int) -> int:
        """The embedding dimension to use for ``num_classes`` classes."""
        return int(self.embedding_dim) if self.embedding_dim else max(num_classes - 1, 64)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss_params"] = dict(self.loss_params)
        d["finetune"] = dict(self.finetune) if self.finetune is not None else None
        return d

    def finetune_config(self) -> FinetuneConfig:
        """The :class:`labeltool.train.finetune.FinetuneConfig` of this round; its ``seed=None`` and
        ``device="auto"`` take this config's seed and device."""

        ft = FinetuneConfig.from_mapping(self.finetune)
        changes: dict[str, Any] = {}
        if ft.seed is None:
            changes["seed"] = self.seed
        if ft.device == "auto":
            changes["device"] = self.device
        return replace(ft, **changes)


@dataclass(frozen=True)
class SuggestConfig:
    """How suggestions are scored and selected (saved as JSON with each round).

    - ``source``: a registered suggestion source (:mod:`labeltool.suggest.registry`): ``"knn"``,
      ``"walk"``, ``"softmax"`` or ``"knn+walk"`` (agreement of both).
    - ``confidence``: for kNN, ``"1nn"`` (paper: 1-NN distance) or ``"vote"`` (weighted vote share).
    - ``k``: neighbours looked at for kNN.
    - ``batch_size``: suggestions per batch (``None`` = no limit); ``percent`` instead takes
      ``ceil(p·|U|/100)`` of the remaining unlabeled pool ``U`` and overrides ``batch_size``.
    - ``stratified``: the total is split evenly over the predictable classes (see
      :func:`~labeltool.suggest.select.select`); unused quota is not redistributed.
    - ``min_confidence``: suggestions below it are dropped.
    - ``evidence``: how many supporting labeled images to attach.
    - ``walk_temperature``: ``T`` in ``M = A·Bᵀ / T``. With normalised embeddings the dot
      products lie in [-1, 1], so T = 1 leaves the walk almost uniform and it then mostly follows
      how many labels each class has; 0.1 is the default (measured in benchmarks/README.md:
      corrections per image 0.35 vs 0.67 on CIFAR-10 at 64 px). ``walk_roundtrip``: multiply the
      walk confidence by its round-trip consistency.
    - ``normalize``: L2-normalise embeddings (cosine geometry) for kNN, the walk and evidence.
    - ``balance``: ``"prevalence"`` gives each class a share of the batch in proportion to its
      estimated share of the unlabeled images (so none starves or takes over); ``"none"`` takes
      the most confident whatever their class. ``stratified`` overrides it.
    - ``calibration_folds``: held-out folds of the verified labels on which the stated precision is
      calibrated (each trains one extra head per round); 0 turns calibration off.
    - ``target_accuracy``: the accuracy the coverage meter counts the reviews still needed for.
    - ``warn_below``: a batch whose estimated precision is below it is flagged before acceptance.
    """

    source: str = "knn"
    confidence: str = "vote"
    k: int = 10
    batch_size: int | None = 100
    percent: float | None = None
    stratified: bool = False
    min_confidence: float = 0.0
    evidence: int = 5
    walk_temperature: float = 0.1
    walk_roundtrip: bool = False
    normalize: bool = True
    balance: str = "prevalence"
    calibration_folds: int = 5
    target_accuracy: float = 0.99
    warn_below: float = 0.9

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance must be one of {list(BALANCE_MODES)}, got {self.balance!r}")
        if not _is_int(self.calibration_folds) or self.calibration_folds < 0 or self.calibration_folds == 1:
            raise ValueError(f"calibration_folds must be 0 (off) or an integer >= 2, got {self.calibration_folds!r}")
        for name in ("target_accuracy", "warn_below"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        if self.source not in list_sources():
            raise ValueError(f"source must be one of {list_sources()}, got {self.source!r}")
        if self.confidence not in KNN_CONFIDENCES:
            raise ValueError(f"confidence must be one of {list(KNN_CONFIDENCES)}, got {self.confidence!r}")
        if not _is_int(self.k) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise ValueError(f"batch_size must be None or an integer >= 1, got {self.batch_size!r}")
        if self.percent is not None and (
            isinstance(self.percent, bool)
            or not isinstance(self.percent, (int, float))
            or not 0 < self.percent <= 100
        ):
            raise ValueError(f"percent must be None or in (0, 100], got {self.percent!r}")
        for name in ("stratified", "walk_roundtrip", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        mc = self.min_confidence
        if isinstance(mc, bool) or not isinstance(mc, (int, float)) or not 0.0 <= mc <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {mc!r}")
        if not _is_int(self.evidence) or self.evidence < 0:
            raise ValueError(f"evidence must be an integer >= 0, got {self.evidence!r}")
        t = self.walk_temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (np.isfinite(t) and t > 0):
            raise ValueError(f"walk_temperature must be a finite number > 0, got {t!r}")

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form of the config."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SuggestConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` listing the valid ones."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown SuggestConfig fields {sorted(unknown)}; valid: {list(cls.__dataclass_fields__)}"
            )
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ExportConfig:
    """What an export writes: the dataset, the model or both; hard links instead of copies;
    whether it may replace a non-empty folder; whether unreviewed (pseudo) labels go in."""

    dataset: bool = True
    model: bool = True
    link: bool = False
    overwrite: bool = False
    include_pseudo: bool = True

    def __post_init__(self) -> None:
        for name in ("dataset", "model", "link", "overwrite", "include_pseudo"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")


REVIEWERS: tuple[str, ...] = ("correct", "reject", "none")


@dataclass(frozen=True)
class SelftrainConfig:
    """A headless self-training run: how many rounds, and how the simulated reviewer answers
    (``correct``: accept right suggestions, relabel wrong ones with the true class; ``reject``:
    only reject wrong ones; ``none``: accept everything unreviewed, plain self-training)."""

    rounds: int = 5
    reviewer: str = "correct"

    def __post_init__(self) -> None:
        if self.reviewer not in REVIEWERS:
            raise ValueError(f"reviewer must be one of {', '.join(map(repr, REVIEWERS))}, got {self.reviewer!r}")
        if not _is_int(self.rounds) or self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")

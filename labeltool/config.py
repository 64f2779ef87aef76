"""The frozen configurations of a project, a training round and a suggestion batch, with their
defaults: the one place defaults live. The CLI and the app read their choices and defaults from
these classes (and from the loss, backbone and source registries).

``FinetuneConfig`` lives in :mod:`labeltool.config_finetune` and is re-exported here. Each config
validates itself on construction and round-trips through JSON, so a saved round
can be reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from labeltool.config_finetune import AMP_MODES, LR_SCHEDULES, SCRATCH_STEPS, FinetuneConfig, is_int
from labeltool.data.decode import DEFAULT_MAX_PIXELS
from labeltool.losses import get_loss_class
from labeltool.models.backbones import DEFAULT_BACKBONE, from_scratch_backbones, get_spec
from labeltool.suggest.knn_scores import KNN_CONFIDENCES
from labeltool.suggest.registry import list_sources

__all__ = [
    "AMP_MODES", "BALANCE_MODES", "EXPORT_MIN_IMAGES", "EXTRACT_RUNTIME", "FIRST_EMBED_SAMPLE", "LR_SCHEDULES", "NEW_PROJECT_MODE", "REVIEWERS", "SCRATCH_STEPS", "SOURCES", "ExportConfig", "SelftrainConfig", "TRAIN_MODES", "FinetuneConfig", "ProjectConfig", "SuggestConfig", "TrainConfig",
]

TRAIN_MODES = ("head", "finetune", "auto")
# what the app and the command line train with unless told otherwise (TrainConfig() itself
# stays "head": a program asks for the choice, and its cost, explicitly)
NEW_PROJECT_MODE = "auto"
BALANCE_MODES = ("prevalence", "none")
SOURCES: tuple[str, ...] = tuple(list_sources())  # the registered suggestion sources, sorted
# feature extraction: "auto" runs the backbone in an inference runtime on a CPU (OpenVINO, else
# ONNX Runtime; labeltool/models/runtimes.py) and in PyTorch on a GPU
EXTRACT_RUNTIME = "auto"
# "auto" exports the backbone (about 3-15 s) only for a job of this many images or more, unless an
# export is already cached: at 224 px it pays back from a few hundred images on a 2-core CPU
EXPORT_MIN_IMAGES = 512
# a new project in the app embeds the labeled images and this many others first (a representative
# sample: benchmarks/README.md §3), proposes from them, and embeds the rest in the background
FIRST_EMBED_SAMPLE = 1000




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
    - ``approximate_from``: from this many labeled images on, kNN suggestions find each unlabeled
      image's nearest labeled ones with an approximate faiss index (IVF, or HNSW for a pool much
      larger than the labeled set; its breadth calibrated to recall@1 >= 0.995 against exact search
      on a sample), built once per round; below it the search is exact. Only on the CPU (on a GPU
      the search stays exact). ``None``: always exact. Default 100,000 (benchmarks/README.md §3).
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
    approximate_from: int | None = 100_000

    def __post_init__(self) -> None:
        if self.approximate_from is not None and (not is_int(self.approximate_from) or self.approximate_from < 1):
            raise ValueError(f"approximate_from must be None or an integer >= 1, got {self.approximate_from!r}")
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance must be one of {list(BALANCE_MODES)}, got {self.balance!r}")
        if not is_int(self.calibration_folds) or self.calibration_folds < 0 or self.calibration_folds == 1:
            raise ValueError(f"calibration_folds must be 0 (off) or an integer >= 2, got {self.calibration_folds!r}")
        for name in ("target_accuracy", "warn_below"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        if self.source not in list_sources():
            raise ValueError(f"source must be one of {list_sources()}, got {self.source!r}")
        if self.confidence not in KNN_CONFIDENCES:
            raise ValueError(f"confidence must be one of {list(KNN_CONFIDENCES)}, got {self.confidence!r}")
        if not is_int(self.k) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.batch_size is not None and (not is_int(self.batch_size) or self.batch_size < 1):
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
        if not is_int(self.evidence) or self.evidence < 0:
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
        if not is_int(self.rounds) or self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")

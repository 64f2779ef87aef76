"""Settings of an end-to-end (fine-tuning) run and their defaults; re-exported by
:mod:`labeltool.config`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from labeltool.models.backbones import BackboneSpec

AMP_MODES = ("auto", "bf16", "fp16", "off")
LR_SCHEDULES = ("constant", "cosine")
# steps of a from-scratch network's round unless set: a round's budget on a CPU (about 5 minutes
# for hoffer_mnist); the network continues across rounds (one run of 1,500 steps reached 98.6% on
# MNIST with 100 labels, benchmarks/README.md section 5)
SCRATCH_STEPS = 600


def is_int(v: object) -> bool:
    """An integer that is not a bool (numpy integers count)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fine-tuning run (stored with the round inside ``TrainConfig.finetune``).

    ``stages``: how many of the backbone's last stages to train (0 or ``"all"``: every stage).
    ``steps`` overrides ``epochs`` (an epoch = enough P x K batches to cover the labeled images
    once); ``max_steps`` caps the steps that come from ``epochs`` or a from-scratch backbone's
    default (``steps`` set by hand is not capped; None: no cap). ``seed=None`` and
    ``device="auto"`` take the round's ``TrainConfig`` values.
    Defaults that depend on the backbone come from :meth:`for_backbone` (``finetune`` applies it).

    ``holdout``: fraction of the labeled images held out (stratified) to stop early on: every
    ``eval_every`` steps the held-out images are scored by 1-NN against the training labeled
    ones; the best state is kept, and training stops after ``patience`` evaluations without
    improvement (0 = off). ``consistency``: weight of a FixMatch term on ``unlabeled_batch``
    unlabeled images per step, pseudo-labels kept where the weak view's confidence reaches
    ``consistency_threshold`` (0 = off; see :mod:`labeltool.train.consistency`).
    ``lr_schedule``: ``"constant"`` keeps the learning rates; ``"cosine"`` lowers every rate
    along half a cosine from its set value at the first step to near 0 at the run's last step.
    """

    stages: int | str = 2
    epochs: int = 5
    steps: int | None = None
    max_steps: int | None = None
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
    lr_schedule: str = "constant"

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
        for name in ("steps", "max_steps"):
            if getattr(self, name) is not None and (not is_int(getattr(self, name)) or getattr(self, name) < 1):
                raise ValueError(f"{name} must be a whole number >= 1 or None, got {getattr(self, name)!r}")
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
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
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
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
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
        ``SCRATCH_STEPS`` steps (at most ``max_steps``) unless steps or epochs were set (5 epochs
        of 100 labels are 15 steps: nothing for a network that starts from noise). A pretrained one
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
            changes["steps"] = min(SCRATCH_STEPS, self.max_steps or SCRATCH_STEPS)
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

"""Settings of a training round (saved with it) and of a headless self-training run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from labeltool.config.finetune import FinetuneConfig, is_int
from labeltool.losses import get_loss_class
from labeltool.models.backbones import from_scratch_backbones, get_spec
from labeltool.models.heads import PRECISIONS

TRAIN_MODES = ("head", "finetune", "auto")
# what the app and the command line train with unless told otherwise (TrainConfig() itself
# stays "head": a program asks for the choice, and its cost, explicitly)
NEW_PROJECT_MODE = "auto"


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
    # a round that continues the previous round's head (its weights and Adam moments) trains at
    # most this many steps: at 100 and at 4,000 labels 150 continued steps reach the accuracy of
    # 300 continued or 375 fresh ones (benchmarks/README.md, "continued round")
    continued_steps: int = 150
    mode: str = "head"  # "head" | "finetune" | "auto" (chosen per round by held-out accuracy)
    finetune: Mapping[str, Any] | None = None  # FinetuneConfig fields (finetune and auto modes)
    backbone: str | None = None  # the network a fine-tune round trains; None = the project's backbone
    # the head's products while it trains: "float32", "bfloat16" (autocast; the loss, the
    # weights and Adam stay float32) or "auto": bfloat16 on a CPU with native bfloat16 products
    # (AMX or AVX512-BF16), float32 elsewhere (benchmarks/README.md, "training in bfloat16")
    precision: str = "auto"

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
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown training precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        cls = get_loss_class(self.loss)  # raises for unknown names
        known = {p.name for p in cls.hyperparams}
        bad = sorted(set(self.loss_params) - known)
        if bad:
            raise ValueError(f"loss {self.loss!r} has no hyperparameter(s) {bad}; valid: {sorted(known)}")
        for name in ("hidden_dim", "epochs", "classes_per_batch", "samples_per_class", "min_steps", "max_steps",
                     "continued_steps"):
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
        ``device="auto"`` take this config's seed and device, and ``max_steps=None`` this config's
        ``max_steps`` (so "steps per round at most" bounds an end-to-end round too, unless its
        ``steps`` are set)."""

        ft = FinetuneConfig.from_mapping(self.finetune)
        changes: dict[str, Any] = {}
        if ft.max_steps is None:
            changes["max_steps"] = self.max_steps
        if ft.seed is None:
            changes["seed"] = self.seed
        if ft.device == "auto":
            changes["device"] = self.device
        return replace(ft, **changes)


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

"""Mode ``auto`` and per-round networks, as methods of :class:`labeltool.session.LabelingSession`.

A round in mode ``auto`` resolves to a concrete mode and network before it trains
(:mod:`labeltool.rounds.choose` picks, :mod:`labeltool.rounds.auto` scores); the choice is
stored in the round's record under ``auto`` and kept until the labeled set has grown enough.
A round may train a network other than the project's (a small one from scratch); its
checkpoint names it, and :meth:`SessionAuto.round_base` rebuilds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from labeltool.config import TrainConfig
from labeltool.models.backbones import create_backbone, get_spec
from labeltool.models.extract import pick_device
from labeltool.rounds.auto import choose_training, with_recipe
from labeltool.rounds.choose import Choice, candidates, needs_decision

if TYPE_CHECKING:
    from labeltool.data.pool import Pool
    from labeltool.data.project import Project
    from labeltool.data.store import Store
    from labeltool.models.backbones import Backbone, BackboneSpec
    from labeltool.train.checkpoints import Checkpoint

_KIND_SAMPLE = 64  # images opened to tell grayscale from colour


class SessionAuto:
    """Mixin of :class:`~labeltool.session.LabelingSession`: mode ``auto`` and round networks."""

    project: Project
    store: Store

    if TYPE_CHECKING:  # provided by LabelingSession
        @property
        def backbone_spec(self) -> BackboneSpec: ...
        def backbone(self, with_classifier: bool = False) -> Backbone: ...

    def resolve_mode(self, config: TrainConfig, pool: Pool, labels: np.ndarray,
                     progress: Callable[[str], None] | None = None) -> tuple[TrainConfig, Choice | None]:
        """``config`` with mode ``auto`` replaced by the chosen mode and network (and the choice);
        any other mode unchanged (a user who picks by hand is never overruled)."""
        if config.mode != "auto":
            return config, None
        side, gray = self.image_kind(pool)
        offered = candidates(self.backbone_spec, side, gray, pick_device(config.device).type == "cuda")
        previous = self.training_choice()
        n_labeled = int((labels >= 0).sum())
        if len(offered) == 1:
            choice = Choice(offered[0], {}, n_labeled, 0, f"{offered[0].label}: the only way to learn that fits "
                            f"{int(side)} px images on this machine")
        elif needs_decision(previous, n_labeled, offered) or previous is None:
            paths = [self.project.image_path(r) for r in pool.relpaths]
            choice = choose_training(offered, pool.features, paths, labels, config, self.backbone,
                                     None if progress is None else lambda m: progress(f"Mode auto: {m}…"))
        else:
            choice = previous
        return with_recipe(config, choice.candidate), choice

    def training_choice(self) -> Choice | None:
        """The newest round's ``auto`` choice, or None (no round yet, or chosen by hand)."""
        for row in reversed(self.store.rounds()):
            if row.finished is not None:
                data = row.config.get("auto")
                return Choice.from_json(data) if data else None
        return None

    def training_line(self) -> str:
        """How the newest round learned, for people: ``training: auto → <way>: <why>``, or the
        mode and network picked by hand."""
        last = self.store.last_finished_round()
        if last is None:
            return "training: no round yet"
        choice = self.training_choice()
        if choice is not None:
            return f"training: auto → {choice.reason}"  # the reason starts with the chosen way
        mode = (last.config.get("train") or {}).get("mode", "head")
        net = (last.config.get("backbone") or {}).get("name", self.backbone_spec.name)
        return f"training: {mode} on {net} (chosen by hand)"

    def image_kind(self, pool: Pool) -> tuple[float, bool]:
        """``(median shorter side in px, whether most images are grayscale)`` of the pool."""
        rows = [r for r in self.store.images() if r.width and r.height]
        sides = [min(int(r.width or 0), int(r.height or 0)) for r in rows]
        side = float(np.median(sides)) if sides else float(self.backbone_spec.input_size)
        step = max(1, len(pool.relpaths) // _KIND_SAMPLE)
        gray = [_is_gray(self.project.image_path(r)) for r in pool.relpaths[::step][:_KIND_SAMPLE]]
        return side, bool(gray) and sum(gray) > len(gray) / 2

    def round_base(self, meta: dict[str, Any]) -> Backbone:
        """The network a round with checkpoint ``meta`` trained, at its starting weights: the
        project's backbone, or the from-scratch network the round named."""
        name = (meta.get("backbone") or {}).get("name")
        if name and name != self.backbone_spec.name and not get_spec(name).pretrained:
            return create_backbone(name)
        return self.backbone()

    def checkpoint_base(self, ckpt: Checkpoint) -> Backbone:
        """:meth:`round_base` of a loaded checkpoint."""
        return self.round_base(ckpt.meta)


def _is_gray(path: Any) -> bool:
    """Whether an image file is single-channel, or RGB with equal channels."""
    try:
        with Image.open(path) as im:
            if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
                return True
            small = np.asarray(im.convert("RGB").resize((16, 16)), dtype=np.int16)
    except (OSError, UnidentifiedImageError, ValueError):
        return False
    return bool(np.abs(small - small[..., :1]).max() <= 2)

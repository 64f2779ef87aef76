"""Per-round checkpoints: ``round-N.safetensors`` (head + loss parameters) and ``round-N.json``;
a fine-tune round also writes ``round-N.backbone.safetensors`` (the fine-tuned backbone's state).
``round-N.optimizer.safetensors`` holds the round's Adam moments, kept for the newest round only:
the next round continues from them."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from labeltool.config import TrainConfig
from labeltool.losses import EmbeddingLoss, create_loss
from labeltool.models.backbones import Backbone
from labeltool.models.heads import ProjectionHead
from labeltool.train.head import load_state, state_dict_of

BACKBONE_KEY = "backbone_weights"  # meta key naming the fine-tuned backbone's file
OPTIMIZER_KEY = "optimizer_state"  # meta key naming the file with the round's Adam moments


@dataclass
class Checkpoint:
    """A head and its loss restored from disk, with the metadata saved beside them.

    A fine-tune round also has a backbone: held in ``backbone`` once built, else read from
    ``backbone_file`` by :meth:`load_backbone`.
    """

    round: int
    head: ProjectionHead
    loss: EmbeddingLoss
    meta: dict[str, Any]
    backbone: Backbone | None = None
    backbone_file: Path | None = None
    optimizer_state: dict[str, Tensor] | None = None
    optimizer_file: Path | None = None

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.meta["train_config"])

    @property
    def finetuned(self) -> bool:
        """Whether this round fine-tuned the backbone (its features differ from the base cache)."""
        return self.backbone is not None or BACKBONE_KEY in self.meta

    def load_optimizer_state(self) -> dict[str, Tensor] | None:
        """The round's Adam moments (see :mod:`labeltool.train.optim_state`), to continue training from;
        None when the round kept none (older projects, or not the newest round)."""
        if self.optimizer_state is None and self.optimizer_file is not None and self.optimizer_file.exists():
            self.optimizer_state = load_file(str(self.optimizer_file))
        return self.optimizer_state

    def load_backbone(self, base: Backbone) -> Backbone:
        """The round's fine-tuned backbone: a copy of ``base`` (the pretrained one, same
        architecture) with the saved state loaded; built once and kept."""
        if self.backbone is None:
            if self.backbone_file is None or not self.backbone_file.exists():
                raise FileNotFoundError(
                    f"round {self.round} fine-tuned its backbone but {self.backbone_file} is missing; train a new round"
                )
            model = copy.deepcopy(base).cpu()
            model.load_state_dict(load_file(str(self.backbone_file)))
            self.backbone = model.eval()
        return self.backbone


def _paths(directory: Path, round_id: int) -> tuple[Path, Path]:
    return directory / f"round-{round_id}.safetensors", directory / f"round-{round_id}.json"


def backbone_file_name(round_id: int) -> str:
    return f"round-{round_id}.backbone.safetensors"


def optimizer_file_name(round_id: int) -> str:
    return f"round-{round_id}.optimizer.safetensors"


def _save_atomic(tensors: Mapping[str, Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def save_checkpoint(
    directory: Path, round_id: int, head: ProjectionHead, loss: EmbeddingLoss, meta: dict[str, Any],
    backbone_state: Mapping[str, Tensor] | None = None,
    optimizer_state: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write the checkpoint atomically (tmp + rename; weights before metadata, so a ``.json``
    means the round is complete). ``backbone_state`` goes to ``round-N.backbone.safetensors``,
    ``optimizer_state`` to ``round-N.optimizer.safetensors``; once the round is complete, older
    rounds' optimizer files are removed (only the newest round is continued from)."""
    directory.mkdir(parents=True, exist_ok=True)
    weights, info = _paths(directory, round_id)
    extra: dict[str, Any] = {}
    if backbone_state is not None:
        _save_atomic(backbone_state, directory / backbone_file_name(round_id))
        extra[BACKBONE_KEY] = backbone_file_name(round_id)
    if optimizer_state:
        _save_atomic(optimizer_state, directory / optimizer_file_name(round_id))
        extra[OPTIMIZER_KEY] = optimizer_file_name(round_id)
    tmp = weights.with_suffix(".tmp")
    save_file(state_dict_of(head, loss), str(tmp))
    os.replace(tmp, weights)
    full = {**meta, **extra, "round": round_id, "head": head.config(), "loss": loss.config()}
    tmp_info = info.with_suffix(".json.tmp")
    tmp_info.write_text(json.dumps(full, indent=2, sort_keys=True))
    os.replace(tmp_info, info)
    remove_stale_temporaries(directory)
    for old in directory.glob("round-*.optimizer.safetensors"):
        if old.name != extra.get(OPTIMIZER_KEY):
            old.unlink(missing_ok=True)
    return weights


STALE_TMP_SECONDS = 600.0  # a live save holds its .tmp for seconds; older ones are a killed save's


def remove_stale_temporaries(directory: Path, older_than: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete ``round-*.tmp`` files a killed save left behind (older than ``older_than`` seconds,
    so another process's save in progress is never touched); returns what was removed."""
    removed = []
    now = time.time()
    for p in directory.glob("round-*.tmp"):
        try:
            if now - p.stat().st_mtime > older_than:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:  # renamed or removed meanwhile
            continue
    return removed


def load_checkpoint(directory: Path, round_id: int) -> Checkpoint:
    """Restore round ``round_id``; ``FileNotFoundError`` if it was never completed. The backbone
    of a fine-tune round is read later, by :meth:`Checkpoint.load_backbone`."""
    weights, info = _paths(directory, round_id)
    if not (weights.exists() and info.exists()):
        raise FileNotFoundError(f"no complete checkpoint for round {round_id} in {directory}")
    meta = json.loads(info.read_text())
    h = meta["head"]
    head = ProjectionHead(int(h["in_dim"]), int(h["out_dim"]), int(h["hidden_dim"]), float(h["dropout"]))
    lc = meta["loss"]
    loss = create_loss(lc["name"], num_classes=lc["num_classes"], embedding_dim=lc["embedding_dim"], **lc["hyper"])
    load_state(head, loss, load_file(str(weights)))
    bb_file = directory / Path(meta[BACKBONE_KEY]).name if BACKBONE_KEY in meta else None
    opt_file = directory / Path(meta[OPTIMIZER_KEY]).name if OPTIMIZER_KEY in meta else None
    return Checkpoint(round_id, head.eval(), loss.eval(), meta, backbone_file=bb_file, optimizer_file=opt_file)


def latest_round(directory: Path) -> int | None:
    """The highest round with a complete checkpoint, or None."""
    rounds = []
    for p in directory.glob("round-*.json"):
        try:
            n = int(p.stem.split("-", 1)[1])
        except ValueError:
            continue
        if _paths(directory, n)[0].exists():
            rounds.append(n)
    return max(rounds) if rounds else None

"""Per-round checkpoints: ``round-N.safetensors`` (head + loss parameters) and ``round-N.json``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from labeltool.heads import ProjectionHead
from labeltool.losses import EmbeddingLoss, create_loss
from labeltool.train import TrainConfig, load_state, state_dict_of


@dataclass
class Checkpoint:
    """A head and its loss restored from disk, with the metadata saved beside them."""

    round: int
    head: ProjectionHead
    loss: EmbeddingLoss
    meta: dict[str, Any]

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.meta["train_config"])


def _paths(directory: Path, round_id: int) -> tuple[Path, Path]:
    return directory / f"round-{round_id}.safetensors", directory / f"round-{round_id}.json"


def save_checkpoint(
    directory: Path, round_id: int, head: ProjectionHead, loss: EmbeddingLoss, meta: dict[str, Any]
) -> Path:
    """Write the checkpoint atomically (tmp + rename, weights before metadata)."""
    directory.mkdir(parents=True, exist_ok=True)
    weights, info = _paths(directory, round_id)
    tmp = weights.with_suffix(".tmp")
    save_file(state_dict_of(head, loss), str(tmp))
    os.replace(tmp, weights)
    full = {**meta, "round": round_id, "head": head.config(), "loss": loss.config()}
    tmp_info = info.with_suffix(".json.tmp")
    tmp_info.write_text(json.dumps(full, indent=2, sort_keys=True))
    os.replace(tmp_info, info)
    return weights


def load_checkpoint(directory: Path, round_id: int) -> Checkpoint:
    """Restore round ``round_id``; ``FileNotFoundError`` if it was never completed."""
    weights, info = _paths(directory, round_id)
    if not (weights.exists() and info.exists()):
        raise FileNotFoundError(f"no complete checkpoint for round {round_id} in {directory}")
    meta = json.loads(info.read_text())
    h = meta["head"]
    head = ProjectionHead(int(h["in_dim"]), int(h["out_dim"]), int(h["hidden_dim"]), float(h["dropout"]))
    lc = meta["loss"]
    loss = create_loss(lc["name"], num_classes=lc["num_classes"], embedding_dim=lc["embedding_dim"], **lc["hyper"])
    load_state(head, loss, load_file(str(weights)))
    return Checkpoint(round_id, head.eval(), loss.eval(), meta)


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

"""Per-round checkpoints: ``round-N.safetensors`` (head + loss parameters) and ``round-N.json``;
a fine-tune round also writes ``round-N.backbone.safetensors`` (the fine-tuned backbone's state).
``round-N.optimizer.safetensors`` holds the round's Adam moments, kept for the newest round only:
the next round continues from them.

``round-N.json`` records each weights file's sha256 (``file_sha256``); loading verifies them and
raises :class:`CheckpointDamagedError` naming a damaged file. Checkpoints saved before hashes
were recorded load unverified. A save checks the free space first and turns any write error
into :class:`CheckpointWriteError` (naming the path and the space needed), leaving no file of
the round behind.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load as load_tensors
from safetensors.torch import save as tensors_bytes
from torch import Tensor

from labeltool.config import TrainConfig
from labeltool.losses import EmbeddingLoss, create_loss
from labeltool.models.backbones import Backbone
from labeltool.models.heads import ProjectionHead
from labeltool.train.head import load_state, state_dict_of

BACKBONE_KEY = "backbone_weights"  # meta key naming the fine-tuned backbone's file
OPTIMIZER_KEY = "optimizer_state"  # meta key naming the file with the round's Adam moments
FILE_HASHES_KEY = "file_sha256"  # meta key: {file name: sha256 hex} of the round's weights files
SPACE_MARGIN_BYTES = 1024 * 1024  # free space to leave beyond a checkpoint's own size


class CheckpointDamagedError(ValueError):
    """A checkpoint file does not match its recorded hash or cannot be read."""

    def __init__(self, path: Path, round_id: int, why: str) -> None:
        back = f"go back to round {round_id - 1}" if round_id > 1 else "have no round"
        super().__init__(
            f"checkpoint file {path} is damaged ({why}); move {path.parent}/round-{round_id}.* away to {back}, "
            "or train a new round from scratch with `labeltool train --fresh`")
        self.path = path


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, ...); names the path and the space needed."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.errno = code


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _read_verified(path: Path, meta: Mapping[str, Any], round_id: int) -> dict[str, Tensor]:
    """Tensors of ``path``, checked against the sha256 recorded in ``meta`` (when there is one)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointDamagedError(path, round_id, f"cannot be read: {e.strerror or e}") from None
    want = dict(meta.get(FILE_HASHES_KEY) or {}).get(path.name)
    if want is not None and hashlib.sha256(data).hexdigest() != want:
        raise CheckpointDamagedError(path, round_id, f"its sha256 differs from the one recorded in round-{round_id}.json")
    try:
        return load_tensors(data)
    except Exception as e:  # an unverified file from before hashes were recorded
        raise CheckpointDamagedError(path, round_id, f"not a readable safetensors file: {e}") from None


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
            self.optimizer_state = _read_verified(self.optimizer_file, self.meta, self.round)
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
            model.load_state_dict(_read_verified(self.backbone_file, self.meta, self.round))
            self.backbone = model.eval()
        return self.backbone


def _paths(directory: Path, round_id: int) -> tuple[Path, Path]:
    return directory / f"round-{round_id}.safetensors", directory / f"round-{round_id}.json"


def backbone_file_name(round_id: int) -> str:
    return f"round-{round_id}.backbone.safetensors"


def optimizer_file_name(round_id: int) -> str:
    return f"round-{round_id}.optimizer.safetensors"


def _tmp_of(path: Path) -> Path:
    """Where ``path`` is written before its rename (``round-N.tmp`` for the head's weights)."""
    if path.suffix == ".safetensors" and path.name.count(".") == 1:
        return path.with_suffix(".tmp")
    return path.with_name(path.name + ".tmp")


def _free_text(directory: Path) -> str:
    try:
        return _megabytes(shutil.disk_usage(directory).free) + " free"
    except OSError:
        return "free space unknown"


def _write_all(files: Mapping[Path, bytes]) -> None:
    """Write each file atomically (tmp + fsync + rename), in order; on any error remove every
    file written so far and raise :class:`CheckpointWriteError`."""
    directory = next(iter(files)).parent
    needed = sum(len(b) for b in files.values())
    if shutil.disk_usage(directory).free < needed + SPACE_MARGIN_BYTES:
        raise CheckpointWriteError(
            f"not enough space to save the checkpoint in {directory}: it needs {_megabytes(needed + SPACE_MARGIN_BYTES)}"
            f", {_free_text(directory)}; free some space there and train the round again", errno.ENOSPC)
    done: list[Path] = []
    for path, data in files.items():
        tmp = _tmp_of(path)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            done.append(path)
        except OSError as e:
            for p in [tmp, *done]:
                p.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"could not write {path} ({e.strerror or e}); the checkpoint needs {_megabytes(needed)} in "
                f"{directory} ({_free_text(directory)} now): free some space there and train the round again",
                e.errno) from e


def save_checkpoint(
    directory: Path, round_id: int, head: ProjectionHead, loss: EmbeddingLoss, meta: dict[str, Any],
    backbone_state: Mapping[str, Tensor] | None = None,
    optimizer_state: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write the checkpoint atomically (tmp + rename; weights before metadata, so a ``.json``
    means the round is complete, and it records each weights file's sha256). ``backbone_state``
    goes to ``round-N.backbone.safetensors``, ``optimizer_state`` to ``round-N.optimizer.safetensors``;
    once the round is complete, older rounds' optimizer files are removed (only the newest round
    is continued from). Raises :class:`CheckpointWriteError` (nothing of the round left) when the
    disk is too full or a write fails."""
    directory.mkdir(parents=True, exist_ok=True)
    weights, info = _paths(directory, round_id)
    extra: dict[str, Any] = {}
    files: dict[Path, bytes] = {}
    if backbone_state is not None:
        files[directory / backbone_file_name(round_id)] = tensors_bytes({k: v.contiguous() for k, v in backbone_state.items()})
        extra[BACKBONE_KEY] = backbone_file_name(round_id)
    if optimizer_state:
        files[directory / optimizer_file_name(round_id)] = tensors_bytes({k: v.contiguous() for k, v in optimizer_state.items()})
        extra[OPTIMIZER_KEY] = optimizer_file_name(round_id)
    files[weights] = tensors_bytes(state_dict_of(head, loss))
    extra[FILE_HASHES_KEY] = {p.name: hashlib.sha256(b).hexdigest() for p, b in files.items()}
    full = {**meta, **extra, "round": round_id, "head": head.config(), "loss": loss.config()}
    files[info] = json.dumps(full, indent=2, sort_keys=True).encode()
    _write_all(files)
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
    try:
        meta = json.loads(info.read_text(encoding="utf-8"))
        h, lc = meta["head"], meta["loss"]
        head = ProjectionHead(int(h["in_dim"]), int(h["out_dim"]), int(h["hidden_dim"]), float(h["dropout"]))
        loss = create_loss(lc["name"], num_classes=lc["num_classes"], embedding_dim=lc["embedding_dim"], **lc["hyper"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointDamagedError(info, round_id, f"unreadable metadata: {e}") from None
    load_state(head, loss, _read_verified(weights, meta, round_id))
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

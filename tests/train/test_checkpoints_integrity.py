"""Checkpoint integrity: each weights file's sha256 is recorded in round-N.json and verified on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from labeltool.config import TrainConfig
from labeltool.train.checkpoints import (
    FILE_HASHES_KEY,
    CheckpointDamagedError,
    load_checkpoint,
    save_checkpoint,
)
from labeltool.train.head import new_head_and_loss


def _save(tmp_path: Path, round_id: int = 2) -> torch.nn.Linear:
    head, loss = new_head_and_loss(8, 3, TrainConfig())
    base = torch.nn.Linear(4, 2)
    save_checkpoint(tmp_path, round_id, head, loss, {"classes": ["a", "b", "c"]}, base.state_dict(),
                    optimizer_state={"step": torch.tensor([3.0])})
    return base


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the tensor data: the file still parses
    path.write_bytes(bytes(data))


def test_the_json_records_every_weights_file_s_sha256(tmp_path: Path) -> None:
    _save(tmp_path)
    recorded = json.loads((tmp_path / "round-2.json").read_text())[FILE_HASHES_KEY]
    names = {"round-2.safetensors", "round-2.backbone.safetensors", "round-2.optimizer.safetensors"}
    assert set(recorded) == names
    for name in names:
        assert recorded[name] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    ck = load_checkpoint(tmp_path, 2)
    assert float(ck.load_optimizer_state()["step"]) == 3.0  # type: ignore[index]


@pytest.mark.parametrize("name", ["round-2.safetensors", "round-2.backbone.safetensors",
                                  "round-2.optimizer.safetensors"])
def test_a_damaged_weights_file_is_named_on_load(tmp_path: Path, name: str) -> None:
    base = _save(tmp_path)
    _flip_a_byte(tmp_path / name)
    with pytest.raises(CheckpointDamagedError) as err:
        ck = load_checkpoint(tmp_path, 2)
        ck.load_backbone(base)  # type: ignore[arg-type]
        ck.load_optimizer_state()
    msg = str(err.value)
    assert str(tmp_path / name) in msg and "sha256" in msg and "round 1" in msg and "--fresh" in msg
    assert err.value.path == tmp_path / name


def test_unreadable_metadata_names_the_json(tmp_path: Path) -> None:
    _save(tmp_path)
    (tmp_path / "round-2.json").write_bytes(b"\x8f random bytes")
    with pytest.raises(CheckpointDamagedError, match=r"round-2\.json"):
        load_checkpoint(tmp_path, 2)


def test_a_checkpoint_saved_before_hashes_were_recorded_loads_unverified(tmp_path: Path) -> None:
    _save(tmp_path)
    info = tmp_path / "round-2.json"
    meta = json.loads(info.read_text())
    del meta[FILE_HASHES_KEY]
    info.write_text(json.dumps(meta))
    assert load_checkpoint(tmp_path, 2).round == 2
    (tmp_path / "round-2.safetensors").write_bytes(b"not safetensors")  # still refused when unreadable
    with pytest.raises(CheckpointDamagedError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path, 2)

"""Checkpoint files: a save leaves no temporaries, and cleans those a killed save left behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

from labeltool.config import TrainConfig
from labeltool.train.checkpoints import latest_round, load_checkpoint, save_checkpoint
from labeltool.train.head import new_head_and_loss


def test_save_removes_stale_temporaries_but_not_a_save_in_progress(tmp_path: Path) -> None:
    head, loss = new_head_and_loss(8, 3, TrainConfig())
    stale = [tmp_path / "round-1.tmp", tmp_path / "round-1.json.tmp", tmp_path / "round-1.backbone.safetensors.tmp"]
    live = tmp_path / "round-3.tmp"  # another process is saving round 3 right now
    for p in [*stale, live]:
        p.write_bytes(b"partial")
    old = time.time() - 3600
    for p in stale:
        os.utime(p, (old, old))
    other = tmp_path / "notes.tmp"  # not a checkpoint file: never touched
    other.write_bytes(b"x")
    os.utime(other, (old, old))

    save_checkpoint(tmp_path, 2, head, loss, {"classes": ["a", "b", "c"]})

    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists()
    assert latest_round(tmp_path) == 2
    assert load_checkpoint(tmp_path, 2).meta["classes"] == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp", "round-2.json", "round-2.safetensors",
                                                          "round-3.tmp"]

"""Saving a checkpoint to a full disk: one clear error naming the path and the space needed, no
file of the round left behind, and the round never recorded as finished.

Runs on a real, small tmpfs where this process may mount one (root); the same cases are also
simulated (a reported free space, a write that fails with ENOSPC) so they run everywhere.
"""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from labeltool.config import TrainConfig
from labeltool.session import LabelingSession
from labeltool.train import checkpoints
from labeltool.train.checkpoints import CheckpointWriteError, latest_round, save_checkpoint
from labeltool.train.head import new_head_and_loss

from sample_helpers import mount


@contextmanager
def _full_tmpfs_at(where: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at ``where`` and filled up (see :func:`sample_helpers.mount`)."""
    where.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where))
    try:
        with open(where / "filler", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False, timeout=20)


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with _full_tmpfs_at(tmp_path / "small") as where:
        yield where


def _save(directory: Path, round_id: int = 1) -> None:
    head, loss = new_head_and_loss(8, 3, TrainConfig())
    save_checkpoint(directory, round_id, head, loss, {"classes": ["a", "b", "c"]},
                    optimizer_state={"m": torch.zeros(50_000)})


def _round_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("round-"))


def _assert_clear(err: pytest.ExceptionInfo[CheckpointWriteError], directory: Path) -> None:
    msg = str(err.value)
    assert str(directory) in msg and "MB" in msg and "free some space" in msg
    assert "Traceback" not in msg and "Safetensor" not in msg


def test_a_full_tmpfs_gives_one_clear_error_and_no_round(full_tmpfs: Path) -> None:
    with pytest.raises(CheckpointWriteError) as err:
        _save(full_tmpfs)
    _assert_clear(err, full_tmpfs)
    assert "needs" in str(err.value) and _round_files(full_tmpfs) == [] and latest_round(full_tmpfs) is None


def test_a_write_failing_on_a_full_tmpfs_removes_what_it_wrote(full_tmpfs: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (full_tmpfs / "filler").unlink()
    with open(full_tmpfs / "filler", "wb") as fh:
        fh.write(b"\0" * (1024 * 1024 - 150_000))  # room for the head, not for the 200 kB moments
    real = shutil.disk_usage(full_tmpfs)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda _: real._replace(free=10**12))  # precheck passes
    with pytest.raises(CheckpointWriteError) as err:
        _save(full_tmpfs)
    _assert_clear(err, full_tmpfs)
    assert "could not write" in str(err.value) and err.value.errno == errno.ENOSPC
    assert _round_files(full_tmpfs) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda _: real._replace(free=300_000))
    with pytest.raises(CheckpointWriteError) as err:
        _save(tmp_path)
    _assert_clear(err, tmp_path)
    assert re.search(r"needs 1\.\d MB, 0\.3 MB free", str(err.value)) and _round_files(tmp_path) == []


def test_a_failing_write_leaves_no_file_of_the_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = checkpoints.os.replace
    calls: list[Any] = []

    def replace_then_fail(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == 2:  # the moments are in place, the head's weights fail
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoints.os, "replace", replace_then_fail)
    with pytest.raises(CheckpointWriteError) as err:
        _save(tmp_path)
    _assert_clear(err, tmp_path)
    assert str(tmp_path / "round-1.safetensors") in str(err.value) and _round_files(tmp_path) == []


@pytest.mark.parametrize("disk", ["simulated", "tmpfs"])
def test_training_on_a_full_disk_is_not_recorded_as_a_finished_round(
    project: LabelingSession, monkeypatch: pytest.MonkeyPatch, disk: str,
) -> None:
    where = project.project.checkpoints_dir
    with ExitStack() as full:
        if disk == "tmpfs":
            full.enter_context(_full_tmpfs_at(where))
        else:
            real = shutil.disk_usage(where.parent)
            monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda _: real._replace(free=1000))
        with pytest.raises(CheckpointWriteError, match="not enough space to save the checkpoint") as err:
            project.train_round(TrainConfig(max_steps=5, seed=0))
        assert str(where) in str(err.value)
        assert project.store.last_finished_round() is None and project.stats()["rounds"] == 0
        assert "not enough space" in project.store.rounds()[-1].metrics["failed"]
        assert latest_round(where) is None
        monkeypatch.undo()
    assert project.train_round(TrainConfig(max_steps=5, seed=0))["round"] == 2  # space freed: the next one works
    assert project.stats()["rounds"] == 1

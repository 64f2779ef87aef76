"""A full disk under a model export: one clear error naming the path and the space needed,
nothing left behind (a real small tmpfs where this runs as root, else simulated)."""

from __future__ import annotations

import errno
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from labeltool.cli import main
from labeltool.config import TrainConfig
from labeltool.io import disk_space
from labeltool.io.disk_space import NoSpaceError, write_file
from labeltool.session import LabelingSession

from sample_helpers import mount

FAST = TrainConfig(epochs=2, min_steps=10)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (smaller than the model, larger than the dataset of the sample); skipped
    where it cannot be mounted (not root, or no mount namespace rights)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_model_export_to_a_full_disk_is_one_clear_error(project: LabelingSession, small_disk: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """It was a C++ ``c10::Error`` dump from the TorchScript writer and rc 134."""
    project.train_round(FAST)
    root = str(project.project.image_root)
    project.close()
    out = small_disk / "models" / "m"
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert main(["export", root, str(out), "--model-only"]) == 2
    assert [str(w.message) for w in shown] == []  # torch's deprecation notices are not printed either
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"labeltool export: error: not enough space to write the export {out}: it needs ")
    assert " MB free" in err and len(err.splitlines()) == 1
    assert [p.name for p in (small_disk / "models").iterdir()] == []  # nothing half-written


def test_a_write_that_runs_out_of_space_is_the_same_clear_error(project: LabelingSession, small_disk: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """When the free space looked sufficient (another writer filled the disk meanwhile)."""
    project.train_round(FAST)
    monkeypatch.setattr("labeltool.io.model_io.ensure_free_space", lambda *a, **kw: None)
    out = small_disk / "m"
    with pytest.raises(NoSpaceError, match=f"not enough space to write the export {out}: it needs"):
        project.export(out, dataset=False)
    assert list(small_disk.iterdir()) == []


def test_free_space_is_checked_before_writing_simulated(project: LabelingSession, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    project.train_round(FAST)
    real = disk_space.shutil.disk_usage
    monkeypatch.setattr(disk_space.shutil, "disk_usage", lambda p: real(p)._replace(free=300_000))

    def no_export(*a: object) -> None:
        raise AssertionError("the network was exported before the space for its weights was checked")

    monkeypatch.setattr("labeltool.io.model_io.exported_program", no_export)
    with pytest.raises(NoSpaceError, match=r"it needs at least \d+\.\d MB, 0\.3 MB free") as e:
        project.export(tmp_path / "out", dataset=False)
    assert e.value.needed is not None and e.value.needed > 300_000 and e.value.errno == errno.ENOSPC
    with pytest.raises(NoSpaceError, match="0.3 MB free"):  # the dataset copy is checked too
        project.export(tmp_path / "out", model=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample"]


def test_a_failed_write_leaves_no_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk_space.os, "write", full)
    with pytest.raises(NoSpaceError, match=f"export {tmp_path / 'shown'}: it needs 0.0 MB"):
        write_file(tmp_path / "f.bin", b"x" * 10, tmp_path / "shown")
    assert list(tmp_path.iterdir()) == []

"""What ``overwrite`` may replace: only a previous export (its marker, or the older layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeltool.io.export import DatasetExport, export_project
from labeltool.io.export_target import MARKER
from labeltool.session import LabelingSession


def test_export_writes_a_marker_naming_its_parts(tiny_session: LabelingSession, tmp_path: Path) -> None:
    out = tiny_session.export(tmp_path / "out", model=False)
    assert json.loads((out / MARKER).read_text()) == {"format": "labeltool-export", "version": 1,
                                                      "parts": ["dataset"]}
    assert sorted(p.name for p in out.iterdir()) == ["dataset", MARKER]


def test_overwrite_refuses_a_folder_that_is_not_an_export(tiny_session: LabelingSession, tmp_path: Path) -> None:
    """A folder holding a user's ``important.txt`` was deleted by ``--overwrite``."""
    s = tiny_session
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "important.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=f"{mine} is not a previous labeltool export"):
        s.export(mine, model=False, overwrite=True)
    assert (mine / "important.txt").read_text() == "keep" and (mine / "notes").is_dir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    with pytest.raises(FileExistsError, match="it is not a folder"):
        s.export(a_file, model=False, overwrite=True)
    assert a_file.read_text() == "keep"
    only_a_dataset_folder = tmp_path / "ds"
    (only_a_dataset_folder / "dataset").mkdir(parents=True)  # named like an export, but no manifest
    with pytest.raises(FileExistsError, match=f"no {MARKER} and is not laid out as an export"):
        s.export(only_a_dataset_folder, model=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "file.txt", "mine", "photos"]


def test_overwrite_refuses_an_export_holding_a_users_file(tiny_session: LabelingSession, tmp_path: Path) -> None:
    out = tiny_session.export(tmp_path / "out", model=False)
    (out / "important.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="'important.txt', which no export writes"):
        tiny_session.export(out, model=False, overwrite=True)
    assert (out / "important.txt").read_text() == "keep"


def test_overwrite_replaces_an_export_made_before_the_marker(tiny_session: LabelingSession, tmp_path: Path) -> None:
    """Older exports are recognised by their layout: only ``dataset/manifest.csv`` and/or
    ``model/model.json`` at the top level."""
    out = tiny_session.export(tmp_path / "out", model=False)
    (out / MARKER).unlink()
    (out / "model").mkdir()
    (out / "model" / "model.json").write_text("{}")
    tiny_session.export(out, model=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["dataset", MARKER]


def test_a_file_added_to_the_target_during_the_export_is_kept(tiny_session: LabelingSession, tmp_path: Path) -> None:
    """The target is checked again, under the lock, just before the old export is swapped out."""
    s = tiny_session
    out = s.export(tmp_path / "out", model=False)

    def dataset() -> DatasetExport:
        (out / "important.txt").write_text("saved while the export ran")
        return s._dataset_export()

    with pytest.raises(FileExistsError, match="'important.txt', which no export writes"):
        export_project(s.project, out, dataset=dataset, model=None, link=False, overwrite=True, include_pseudo=True)
    assert (out / "important.txt").is_file() and (out / "dataset" / "manifest.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]  # no partial export left

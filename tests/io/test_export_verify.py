"""The export copies what the manifest says: each file is hashed as it is placed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from labeltool.cli import main
from labeltool.io.export import ChangedSinceScanError
from labeltool.session import LabelingSession


@pytest.mark.parametrize("link", [False, True])
def test_an_image_replaced_after_the_scan_refuses_the_export(tiny_session: LabelingSession, tmp_path: Path,
                                                             link: bool) -> None:
    """A seed image replaced after the scan was exported with the old label and a manifest
    sha256 that did not match the file."""
    s = tiny_session
    src = s.project.image_root / "bag" / "a.png"
    Image.new("L", (8, 8), 250).save(src)  # new content after the scan
    with pytest.raises(ChangedSinceScanError, match=r"1 image\(s\) .* changed since the last scan.*'bag/a.png'"
                       r".*rescan the folder") as err:
        s.export(tmp_path / "out", model=False, link=link)
    assert err.value.relpaths == ["bag/a.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # nothing half-written
    s.scan()
    out = s.export(tmp_path / "out", model=False, link=link)
    man = pd.read_parquet(out / "dataset" / "manifest.parquet")
    assert len(man) == 2
    for path, sha in zip(man["path"], man["sha256"], strict=True):
        assert hashlib.sha256((out / "dataset" / path).read_bytes()).hexdigest() == sha


def test_every_changed_or_missing_image_is_named_and_the_cli_says_to_rescan(
        tiny_session: LabelingSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = tiny_session
    root = s.project.image_root
    s.assign(3, "bag")
    (root / "bag" / "a-3.png").unlink()
    Image.new("L", (8, 8), 1).save(root / "unlabeled" / "a.png")
    with pytest.raises(ChangedSinceScanError) as err:
        s.export(tmp_path / "out", model=False)
    assert err.value.relpaths == ["bag/a-3.png (gone)", "unlabeled/a.png"]
    s.close()
    assert main(["export", str(root), str(tmp_path / "out"), "--dataset-only"]) == 2
    assert "rescan the folder (labeltool embed FOLDER" in capsys.readouterr().err
    assert main(["embed", str(root)]) == 0  # rescans
    assert main(["export", str(root), str(tmp_path / "out"), "--dataset-only"]) == 0
    man = pd.read_csv(tmp_path / "out" / "dataset" / "manifest.csv")
    assert sorted(man["source_path"]) == ["bag/a.png", "unlabeled/a.png"]  # the gone image left out
    for rel, sha in zip(man["source_path"], man["sha256"], strict=True):
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == sha

"""Hostile class names and paths: typed names are validated, folder names are mapped safely on
export, nothing is written outside the export target, and manifest cells cannot run formulas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from labeltool.cli import main
from labeltool.config import ProjectConfig
from labeltool.session import LabelingSession

REFUSED = ["", "   ", ".", "..", "a/b", "/etc/passwd", "../../outside", "..\\win", "C:\\x", "nul\x00byte",
           "new\nline", "tab\tname", "esc\x1b[31m", "x" * 101]
MAPPED = {  # accepted as class names; their export folder
    "CON": "_CON", "nul": "_nul", "LPT1.txt": "_LPT1.txt", "com9": "_com9", "-rf": "-rf", "=1+2": "=1+2",
    "+cmd": "+cmd", "@SUM(A1)": "@SUM(A1)", "a:b?c*": "a_b_c_", "trailing dot.": "trailing dot",
    "名前": "名前", "<script>": "_script_", "|pipe|": "_pipe_",
}


@pytest.fixture
def session(tmp_path: Path) -> Iterator[LabelingSession]:
    """Two seed classes of two images each and 14 unlabeled images."""
    root = tmp_path / "photos"
    for i, cls in enumerate(["cat", "cat", "dog", "dog"] + ["unlabeled"] * 14):
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 15, 0, 0)).save(root / cls / f"{i}.png")
    s = LabelingSession.open(root, config=ProjectConfig(image_size=64))
    yield s
    s.close()


def _unlabeled(s: LabelingSession) -> list[int]:
    labels = s.label_state().labels
    return [i for i in sorted(s.image_rows()) if i not in labels]


def test_typed_class_names_are_validated(session: LabelingSession) -> None:
    image = _unlabeled(session)[0]
    classes = session.classes
    for name in REFUSED:
        with pytest.raises(ValueError, match="class name"):
            session.assign(image, name)
    assert session.classes == classes and session.store.decisions() == []


def test_typed_names_are_mapped_safely_on_export(session: LabelingSession, tmp_path: Path) -> None:
    free = _unlabeled(session)
    for image, name in zip(free, MAPPED, strict=False):
        session.assign(image, name)
    assert len(free) >= len(MAPPED)
    out = session.export(tmp_path / "out", model=False)
    dataset = (out / "dataset").resolve()
    folders = {p.name for p in dataset.iterdir() if p.is_dir()}
    assert folders == {"cat", "dog", *MAPPED.values()}
    for p in dataset.rglob("*"):
        assert p.resolve().is_relative_to(dataset) and not p.is_symlink()
    man = pd.read_csv(out / "dataset" / "manifest.csv", keep_default_na=False)
    raw = pd.read_parquet(out / "dataset" / "manifest.parquet")
    for cell, real in zip(man["label"], raw["label"], strict=True):
        assert cell == ("'" + real if real.startswith(("=", "+", "-", "@")) else real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]  # nothing written beside


def test_review_csv_cannot_name_unknown_classes_or_paths(session: LabelingSession, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    image = session.image_rows()[_unlabeled(session)[0]].relpath
    root = str(session.project.image_root)
    cases = {
        "label '..'": f"path,action,label\n{image},assign,..\n",
        "label with a separator": f"path,action,label\n{image},assign,../../etc\n",
        "absolute label": f"path,action,label\n{image},assign,/abs\n",
        "path escaping the folder": "path,action,label\n../outside.png,assign,cat\n",
        "absolute path": "path,action,label\n/etc/passwd,assign,cat\n",
        "formula as a label": f"path,action,label\n{image},assign,=cmd|' /C calc'!A0\n",
    }
    for what, text in cases.items():
        f = tmp_path / "d.csv"
        f.write_text(text)
        assert main(["review", root, "--decisions", str(f)]) == 2, what
        err = capsys.readouterr().err
        assert "nothing recorded" in err and ("unknown class" in err or "no usable image" in err), what
    assert session.store.decisions() == []


def test_project_dir_and_export_target_cannot_be_class_folders(session: LabelingSession, tmp_path: Path) -> None:
    root = session.project.image_root
    for pdir in (root / "cat", root / "cat" / "proj", root / "unlabeled" / ".proj"):
        with pytest.raises(ValueError, match="class folder"):
            LabelingSession.open(root, project_dir=pdir)
    for target in (root / "cat", root / "new", root / ".labeltool" / "x", root):
        with pytest.raises(ValueError, match="inside the image folder"):
            session.export(target, model=False, overwrite=True)
    with pytest.raises(ValueError, match="holds the image folder"):
        session.export(tmp_path, model=False, overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(root / "cat", target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        session.export(link, model=False, overwrite=True)
    assert sorted(p.name for p in (root / "cat").iterdir()) == ["0.png", "1.png"]

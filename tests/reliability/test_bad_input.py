"""Bad input through the scan, the CLI and the session: every kind has a clear outcome (imported,
skipped with its reason, ignored, or a clear refusal) and nothing crashes."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from badinput import CASES, EMPTY_CLASS, LOCKED, build

from labeltool.cli import main
from labeltool.data import scan as images
from labeltool.data.scan import scan_folder
from labeltool.session import LabelingSession


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The corpus; reading ``LOCKED`` fails with EACCES even for root."""
    real_open = open

    def deny(file: Any, *args: Any, **kw: Any) -> Any:
        if str(file).endswith(LOCKED):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(images, "open", deny, raising=False)
    return build(tmp_path / "photos", tmp_path / "elsewhere")


def _expect(files: dict[str, tuple[str, str | None, str | None]], ignored: dict[str, str]) -> None:
    """Every case has its outcome; ``files`` maps relpath -> (status, error, seed class)."""
    for case in CASES:
        if case.outcome == "ignored":
            assert ignored.get(case.relpath) == case.detail, case.kind
            assert case.relpath not in files, case.kind
            continue
        assert case.relpath in files, f"{case.kind}: {case.relpath!r} not listed"
        status, error, seed = files[case.relpath]
        if case.outcome == "ok":
            assert (status, error, seed or "") == ("ok", None, case.detail), case.kind
        else:
            assert status == "error" and (error or "").startswith(case.detail), (case.kind, error)


def test_corpus_has_every_kind() -> None:
    assert len(CASES) >= 40 and len({c.kind for c in CASES}) == len(CASES)


def test_corpus_scan(corpus: Path) -> None:
    report = scan_folder(corpus)
    _expect({f.relpath: (f.status, f.error, f.seed_class) for f in report.files}, dict(report.ignored))
    assert EMPTY_CLASS not in report.classes and "only_bad" not in report.classes
    assert not any(f.relpath.startswith(EMPTY_CLASS) for f in report.files)
    dup = {f.relpath: f.sha256 for f in report.files}
    assert dup["edge/gray.png"] == dup["edge/dup of gray.png"]


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_corpus_through_the_cli_and_the_session(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                reliability_stats: dict[str, Any]) -> None:
    root = str(corpus)
    code, out, _ = _cli(["init", root, "--image-size", "64"], capsys)
    assert code == 0
    errors = [c for c in CASES if c.outcome == "error"]
    for c in errors:
        assert f"skipped {c.relpath}: {c.detail}" in out, c.kind
    code, out, _ = _cli(["status", root], capsys)
    assert code == 0 and all(f"broken: {c.relpath}: {c.detail}" in out for c in errors)

    with LabelingSession.open(corpus) as s:  # what the app sees
        rows = {r.relpath: r for r in s.store.images()}
        classes = s.classes
        files = {p: (r.status, r.error, classes[r.seed_class_id] if r.seed_class_id is not None else None)
                 for p, r in rows.items()}
        _expect(files, dict(s.scan().ignored))
        for r in rows.values():
            if r.status == "ok":
                assert s.thumbnail(r.id).is_file()  # every imported image can be shown

    assert _cli(["embed", root, "--device", "cpu", "--workers", "0"], capsys)[0] == 0
    code, out, err = _cli(["train", root, "--epochs", "2", "--max-steps", "40", "--device", "cpu", "--mode", "head"], capsys)
    assert code == 0, err
    code, out, _ = _cli(["suggest", root, "--batch", "5"], capsys)
    assert code == 0
    suggested = list(csv.DictReader(io.StringIO(out[out.index("rank,"):])))
    assert len(suggested) == 5 and all(r["path"] in rows for r in suggested)  # newlines in names survive CSV
    target = tmp_path / "export"
    assert _cli(["export", root, str(target), "--dataset-only"], capsys)[0] == 0

    with LabelingSession.open(corpus) as s:
        st = s.stats()
        assert st["embedded"] == st["usable"] == sum(1 for r in rows.values() if r.status == "ok")
        labeled = len(s.label_state().labels)
    man = pd.read_csv(target / "dataset" / "manifest.csv", keep_default_na=False)
    assert len(man) == labeled
    folders = {p.name for p in (target / "dataset").iterdir() if p.is_dir()}
    assert {"_CON", "ctl_class_name", "=HYPERLINK(1)", "-dash", "solo"} <= folders
    assert "'=HYPERLINK(1)" in set(man["label"]) and "'-dash" in set(man["label"])
    assert not any(str(v).startswith(("=", "+", "-", "@")) for col in man.columns for v in man[col])
    for p in man["path"]:
        assert (target / "dataset" / p.lstrip("'")).is_file()
    reliability_stats["bad_input"] = {"kinds": len(CASES), "errors": len(errors),
                                      "ignored": sum(1 for c in CASES if c.outcome == "ignored")}


def _one_class(root: Path) -> None:
    for i in range(3):
        (root / "cats").mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.new("RGB", (10 + i, 10), (i * 40, 0, 0)).save(root / "cats" / f"{i}.png")


def _no_images(root: Path) -> None:
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "readme.txt").write_text("nothing to see")
    (root / "labels.csv").write_text("path,label\n")


def _only_broken(root: Path) -> None:
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "a.jpg").write_bytes(b"")
    (root / "dogs").mkdir()
    (root / "dogs" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(("layout", "why"), [
    ("empty folder", "holds no images; put a few into one sub-folder per class"),
    ("folder with no images", "holds no images; put a few into one sub-folder per class"),
    ("folder with one class", "at least 2 classes"),
    ("folder with only broken images", "none of the 2 files found in"),
])
def test_folders_that_cannot_be_trained(layout: str, why: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    {"empty folder": lambda r: None, "folder with no images": _no_images, "folder with one class": _one_class,
     "folder with only broken images": _only_broken}[layout](root)
    assert _cli(["init", str(root), "--image-size", "64"], capsys)[0] == 0
    assert _cli(["embed", str(root), "--device", "cpu", "--workers", "0"], capsys)[0] == 0
    assert _cli(["status", str(root)], capsys)[0] == 0
    code, _, err = _cli(["train", str(root), "--epochs", "1", "--device", "cpu", "--mode", "head"], capsys)
    assert code == 2 and err.startswith("labeltool train: error: ") and why in err
    code, _, err = _cli(["suggest", str(root)], capsys)
    assert code == 2 and "no round has been trained" in err
    code, _, err = _cli(["export", str(root), str(tmp_path / "out"), "--dataset-only"], capsys)
    assert code == 0 and (tmp_path / "out" / "dataset" / "manifest.csv").is_file()  # seeds only (or none)


@pytest.mark.parametrize("what", ["missing folder", "a file, not a folder"])
def test_paths_that_are_not_folders(what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope"
    if what != "missing folder":
        path.write_text("x")
    for cmd in (["init", str(path)], ["status", str(path)], ["embed", str(path)]):
        code, _, err = _cli(cmd, capsys)
        assert code == 2 and err.startswith(f"labeltool {cmd[0]}: error: ")
        assert ("does not exist" if what == "missing folder" else "is not a folder") in err


@pytest.mark.parametrize("damaged", ["project.json", "project.sqlite"])
def test_damaged_project_files_are_clear_refusals(damaged: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    assert _cli(["init", str(root), "--image-size", "64"], capsys)[0] == 0
    (root / ".labeltool" / damaged).write_bytes(b"\x00garbage{" * 50)
    for name in ("project.sqlite-wal", "project.sqlite-shm"):
        (root / ".labeltool" / name).unlink(missing_ok=True)
    code, _, err = _cli(["status", str(root)], capsys)
    assert code == 2 and ("is damaged" in err or "cannot open the project database" in err), err
    assert "move it away" in err

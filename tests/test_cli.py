"""The CLI end to end on a copy of the sample, including self-training with the simulated reviewer."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from labeltool.cli import main
from labeltool.session import LabelingSession

from sample_helpers import SAMPLE


@pytest.fixture
def folder(embedded_sample: Path, tmp_path: Path) -> Path:
    root = tmp_path / "sample"
    shutil.copytree(embedded_sample, root)
    return root


def test_status_train_suggest_review_export(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(folder)]) == 0
    assert "450 usable" in capsys.readouterr().out
    assert main(["train", str(folder), "--loss", "triplet", "--epochs", "3", "--max-steps", "60", "--param", "margin=0.5",
                 "--finetune-steps", "3"]) == 0
    assert "# auto: " in capsys.readouterr().err  # the default mode says what it chose and why
    assert main(["suggest", str(folder), "--batch", "15"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(out.splitlines()[out.splitlines().index("rank,image_id,path,class,confidence,p_right,source"):]))
    assert len(rows) == 15
    assert all(0.0 <= float(r["p_right"]) <= 1.0 for r in rows)
    assert main(["review", str(folder), "--accept-top", "5"]) == 0
    accepted = capsys.readouterr().out
    assert re.search(r"^accepted 5 suggestion\(s\); estimated precision \d\.\d\d \[\d\.\d\d, \d\.\d\d\]$", accepted, re.M), accepted
    assert main(["status", str(folder)]) == 0
    status = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("training: auto → ") and "held-out labels" in ln for ln in status), status  # the why
    remainder = [ln for ln in status if ln.startswith("estimated accuracy of the remainder: ")]
    assert len(remainder) == 1 and "review(s) to reach 99%" in remainder[0]
    decisions = tmp_path / "d.csv"
    other = "bag" if rows[5]["class"] != "bag" else "coat"  # a correction names another class
    decisions.write_text(
        "path,action,label,correct\n"
        f"{rows[5]['path']},reject,{rows[5]['class']},{other}\n"
        f"{rows[6]['path']},accept,{rows[6]['class']},\n"
    )
    assert main(["review", str(folder), "--decisions", str(decisions)]) == 0
    with LabelingSession.open(folder) as s:
        st = s.label_state()
        assert len(st.labels) == 50 + 5 + 2
    assert main(["review", str(folder), "--undo"]) == 0
    with LabelingSession.open(folder) as s:
        assert len(s.label_state().labels) == 55
    assert main(["export", str(folder), str(tmp_path / "out"), "--dataset-only"]) == 0
    assert (tmp_path / "out" / "dataset" / "manifest.parquet").is_file()


def test_bad_input_gives_clear_errors(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", str(folder), "--param", "margin=9"]) == 2  # cross_entropy has no margin
    assert "no hyperparameter 'margin'" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("path,action,label\nunlabeled/u0001.png,accept,unicorn\nmissing.png,accept,bag\n")
    assert main(["train", str(folder), "--epochs", "2", "--max-steps", "60", "--mode", "head"]) == 0
    assert main(["review", str(folder), "--decisions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "nothing recorded, 2 problem(s)" in err and "unicorn" in err and "missing.png" in err
    assert main(["export", str(folder)]) == 2


def test_selftrain_with_oracle_ends_with_more_correct_labels(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    oracle = SAMPLE / "unlabeled_labels.csv"
    code = main(["selftrain", str(folder), "--rounds", "3", "--percent", "10", "--stratified", "--confidence", "1nn",
                 "--oracle", str(oracle), "--reviewer", "none", "--epochs", "5", "--max-steps", "60", "--mode", "head"])
    assert code == 0
    truth = {r["path"]: r["label"] for r in csv.DictReader(oracle.open())}
    with LabelingSession.open(folder) as s:
        images = s.image_rows()
        st = s.label_state()
        correct = sum(1 for i, c in st.labels.items() if truth.get(images[i].relpath) == s.classes[c])
        wrong = sum(1 for i, c in st.labels.items() if images[i].relpath in truth and truth[images[i].relpath] != s.classes[c])
        assert len(s.store.rounds()) == 3
    # plain self-training (nothing corrected) still adds many more right labels than wrong ones
    assert correct >= 60 and correct > 3 * wrong
    assert "precision" in capsys.readouterr().out


def test_terminal_escapes_in_file_names_are_printed_escaped(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "unlabeled" / "x\x1b[2J\x1b]0;pwned\x07.jpg").write_bytes(b"not an image")
    assert main(["init", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2J" in out


def test_oracle_labels_are_read_nfc(tmp_path: Path) -> None:
    from labeltool.rounds.selftrain import read_oracle

    path = tmp_path / "truth.csv"
    path.write_text("path,label\na/1.png,cafe\u0301\n", encoding="utf-8")
    assert read_oracle(path) == {"a/1.png": "caf\u00e9"}  # matches the class a folder or the app named

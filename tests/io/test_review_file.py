"""Review decision files (CSV): refused when not readable text, tagged with the finished round."""

from __future__ import annotations

from pathlib import Path

import pytest

from labeltool.cli import main
from labeltool.data.store import Store
from labeltool.session import LabelingSession


def test_review_csv_that_is_not_text_is_refused(tiny_session: LabelingSession, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    s = tiny_session
    root = str(s.project.image_root)
    s.close()
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("path,label\nbag/a.png,sac à main\n".encode("latin-1"))
    huge = tmp_path / "huge.csv"
    huge.write_text('path,label\n"' + "x" * 200_000 + '",bag\n')
    for f, why in ((latin, "not UTF-8 text"), (huge, "not a readable CSV file")):
        assert main(["review", root, "--decisions", str(f)]) == 2
        assert why in capsys.readouterr().err
    with Store(Path(root) / ".labeltool" / "project.sqlite") as st:
        assert st.decisions() == []  # nothing recorded


def test_review_csv_decisions_name_the_last_finished_round(tiny_session: LabelingSession, tmp_path: Path) -> None:
    """They were tagged with the newest round even when it never finished (killed mid-training)."""
    s = tiny_session
    done = s.store.start_round({})
    s.store.finish_round(done, {})
    s.store.start_round({})  # killed
    f = tmp_path / "d.csv"
    f.write_text("path,action,label\nunlabeled/a.png,assign,bag\n")
    s.record(s.decisions_from_file(f))
    assert [d.round for d in s.store.decisions()] == [done]
    s.close()


def _problems(s: LabelingSession, f: Path, text: str) -> str:
    f.write_text(text)
    with pytest.raises(ValueError, match="nothing recorded") as e:
        s.decisions_from_file(f)
    return str(e.value)


def test_review_csv_that_reads_two_ways_is_refused_with_line_numbers(tiny_session: LabelingSession,
                                                                     tmp_path: Path) -> None:
    """Conflicting rows, a self-contradicting reject and a doubled column were taken silently
    (the last row, or the last column, won)."""
    s = tiny_session
    f = tmp_path / "d.csv"
    err = _problems(s, f, "path,action,label\nunlabeled/a.png,assign,bag\n\nbag/a.png,accept,bag\n"
                          "unlabeled/a.png,unlabel,\n")
    assert "1 problem(s)" in err
    assert "line 5: image 'unlabeled/a.png' is already decided differently on line 2 (assign 'bag' vs unlabel)" in err
    err = _problems(s, f, "path,action,label,correct\nbag/a.png,reject,bag,bag\n")
    assert "line 2: reject 'bag' with correct class 'bag'" in err
    err = _problems(s, f, "path,label,action,Label \nbag/a.png,bag,accept,bag\n")
    assert "line 1: column 'label' appears 2 times (columns 2, 4)" in err
    err = _problems(s, f, 'path,label\n"bag/a.png",bag,extra\n"bag/\na-3.png",bag\nbag/a.png,bag,,\n'
                          "bag/a.png,bag\nbag/a-3.png,nope\n")
    assert "line 2: 3 values but the header names 2 columns" in err
    assert "line 7: unknown class 'nope'" in err and "3 problem(s)" in err  # line numbers count quoted newlines
    assert "line 3: no usable image 'bag/\\na-3.png'" in err
    assert s.store.decisions() == []


def test_exact_repeats_are_recorded_once_and_reported(tiny_session: LabelingSession, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    s = tiny_session
    f = tmp_path / "d.csv"
    f.write_text("path,action,label\nunlabeled/a.png,assign,bag\nbag/a.png,accept,bag\n"
                 "unlabeled/a.png,ASSIGN,bag \n")
    with caplog.at_level("WARNING", logger="labeltool.io.review_file"):
        rows = s.decisions_from_file(f)
    assert [(r["image_id"], r["action"]) for r in rows] == [(3, "assign"), (2, "accept")]
    assert f"{f}: 1 exact repeat(s) recorded once: line 4 repeats line 2" in caplog.text

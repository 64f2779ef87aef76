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

"""The command line's stderr helpers: stage lines with elapsed seconds, and the progress bar."""

from __future__ import annotations

import pytest

from labeltool.ui.console import progress_bar, stage_printer


def test_each_stage_is_one_stderr_line_with_seconds_since_the_first(capsys: pytest.CaptureFixture[str]) -> None:
    say = stage_printer(lambda m: m.replace("\n", "\\n"))
    say("Mode auto: scoring head (fold 1 of 4)…")
    say("two\nlines")
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines == ["Mode auto: scoring head (fold 1 of 4)… (0 s)", "two\\nlines (0 s)"]


def test_the_bar_counts_up_to_its_total_in_steps_for_training(capsys: pytest.CaptureFixture[str]) -> None:
    update = progress_bar("train")
    for done in (1, 2, 3):
        update(done, 3, 0.5)
    err = capsys.readouterr().err
    assert "train" in err and "3/3" in err and "step" in err


def test_into_a_file_the_bar_writes_a_few_lines_not_one_per_image(capsys: pytest.CaptureFixture[str]) -> None:
    update = progress_bar("embed")
    for done in range(1, 501):
        update(done, 500)
    err = capsys.readouterr().err
    assert "500/500" in err
    assert err.count("/500") <= 3  # the first draw and the final count, not 500 redraws

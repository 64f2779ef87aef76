"""How front ends word errors and advice (labeltool.ui.messages)."""

from __future__ import annotations

import pytest

from labeltool.ui.messages import attempt, low_precision_remedy, user_message


@pytest.mark.parametrize("command_line, flag", [(True, "--mode finetune"), (False, "Train → mode *finetune*")])
def test_a_head_round_is_advised_end_to_end_training(command_line: bool, flag: str) -> None:
    text = low_precision_remedy(end_to_end=False, command_line=command_line)
    assert "one by one" in text and "by hand" in text and flag in text


@pytest.mark.parametrize("command_line, more", [(True, "--finetune-steps"), (False, "more rounds")])
def test_an_end_to_end_round_is_not_advised_it_again(command_line: bool, more: str) -> None:
    text = low_precision_remedy(end_to_end=True, command_line=command_line)
    assert "already trained the network end to end" in text and more in text and "mode" not in text


def test_errors_become_their_message() -> None:
    assert user_message(KeyError("no class 'cat'")) == "no class 'cat'"
    failed = attempt(int, "x")
    assert failed.result is None and failed.error is not None and "invalid literal" in failed.error
    assert attempt(int, "3").result == 3

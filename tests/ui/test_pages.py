"""The pages' view models: review paging and filter, buttons, progress, texts, app state, messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labeltool.suggest.propose import Suggestion
from labeltool.ui.app_state import app_state
from labeltool.ui.cards import Button, batch_buttons, dispute_card, suggestion_card
from labeltool.ui.messages import attempt, user_message
from labeltool.ui.pages import (
    ALL_CLASSES,
    PageText,
    TrainProgress,
    class_filter,
    review_controls,
    review_page,
    selected_image,
    short_count,
)
from labeltool.ui.project_views import default_export_dir, dispute_arrays
from labeltool.ui.queue import Disputed, PrecisionEstimate

CLASSES = ["cat", "dog", "owl"]


def _pending(n: int) -> list[Suggestion]:
    return [Suggestion(i, i % 3, 1 - i / 100, "knn", None, (100 + i,), i) for i in range(n)]


def _page(pending: list[Suggestion], page: int, **values: object) -> object:
    return review_page(pending, CLASSES, {"page_size": 12, **values}, page, labeled=7,
                       precision=lambda rows: PrecisionEstimate(0.5 if rows else float("nan"), f"{len(rows)} rows"))


def test_review_page_is_clamped_to_its_bounds() -> None:
    pending = _pending(30)
    first = _page(pending, 1)
    assert (first.pages, first.page, len(first.shown), first.waiting) == (3, 0, 12, 30)
    last = _page(pending, 99)
    assert (last.page, len(last.shown)) == (2, 6)
    assert [s.image_id for s in last.shown] == list(range(24, 30))
    assert _page(pending, 0).page == 0 and _page(pending, -5).page == 0
    empty = _page([], 4)
    assert (empty.pages, empty.page, empty.shown, empty.precision_text) == (1, 0, [], "–")
    assert first.precision_text == "≈ 0.50 (uncalibrated)" and first.labeled == 7
    assert [m[0] for m in first.metrics] == ["Labeled", "Awaiting review", "Estimated precision (shown)"]
    assert first.metrics[2][2] == "12 rows"


def test_review_filter_and_order() -> None:
    pending = _pending(30)
    dogs = _page(pending, 1, filter_class="dog")
    assert dogs.waiting == 10 and all(s.class_id == 1 for s in dogs.shown)
    low = _page(pending, 1, order="low first")
    assert [s.confidence for s in low.shown] == sorted(s.confidence for s in low.shown)
    assert low.shown[0].image_id == 29
    assert class_filter(ALL_CLASSES, CLASSES) is None and class_filter("owl", CLASSES) == 2
    controls = review_controls(CLASSES)
    assert controls[0].choices == (ALL_CLASSES, *CLASSES) and controls[2].default in controls[2].choices


def test_cards_and_batch_buttons_call_the_session_with_the_shown_rows() -> None:
    shown = _pending(3)
    accept, reject, undo = batch_buttons(shown)
    assert (accept.action, accept.args, accept.disabled, accept.refresh) == ("accept", (shown,), False, True)
    assert reject.action == "reject_many" and reject.args == ([(0, 0), (1, 1), (2, 2)],)
    assert accept.message([11, 12, 13]) == "Accepted 3 suggestions"
    assert undo.message([]) == "Nothing to undo" and undo.message([5, 6]) == "Undid 2 decision(s)"
    assert all(b.disabled for b in batch_buttons([])[:2]) and not batch_buttons([])[2].disabled
    card = suggestion_card(shown[1], CLASSES, "img_1.png")
    assert card.text == "**dog** · 0.99" and not card.inline  # worded buttons, stacked card wide
    assert [b.key for b in card.buttons] == ["acc_1", "rej_1", "ev_1"]
    assert [b.label for b in card.buttons] == ["Accept", "Reject", "Evidence"]
    assert all(b.icon is None for b in card.buttons)
    assert card.buttons[1].message([3]) == "Rejected **dog** for `img_1.png`" and card.buttons[1].offers_undo
    assert card.buttons[0].refresh and card.buttons[1].refresh  # the sidebar counts follow a single click
    assert card.buttons[1].args == (1, 1) and card.buttons[2].state == {"evidence_for": 1}
    assert card.buttons[0].message([9]) is None  # a single click leaves no message
    fix, unlabel = dispute_card(Disputed(4, 0, 2, 0.8, (1, 2)), CLASSES).buttons
    assert (fix.label, fix.action, fix.args) == ("→ owl", "assign", (4, "owl"))
    assert unlabel.message([1]) == "Image 4 unlabeled"
    assert Button("x", ok="{n} done").message(None) == "0 done"


def test_train_progress_redraws_at_most_twice_a_second_and_at_the_end() -> None:
    trace = TrainProgress()
    assert trace.update(1, 10, 0.9, now=100.0)[2]
    assert not trace.update(2, 10, 0.8, now=100.2)[2]
    done, text, redraw = trace.update(3, 10, 0.7, now=100.7)
    assert redraw and done == pytest.approx(0.3) and text == "Training: step 3/10 · loss 0.7000"
    assert trace.update(10, 10, 0.1, now=100.8)[2]
    assert trace.losses == [0.9, 0.8, 0.7, 0.1]
    assert trace.update(5, 0, 0.1, now=200.0)[0] == 1.0


def test_page_texts() -> None:
    text = PageText(tuple(CLASSES))
    s = _pending(2)[1]
    assert text.other_classes(1) == ["cat", "owl"]
    assert text.evidence_thumbs(s, lambda i: f"f{i}.png") == [(1, "suggested: f1.png"), (101, "f101.png")]
    assert text.evidence_title(s).startswith("**Evidence for image 1** → suggested **dog**")
    info = {"image_id": 3, "relpath": "a/b.png", "label": None, "source": None, "suggested": "owl", "confidence": 0.5}
    assert text.image_caption(info) == "**image 3** · `a/b.png`  \nlabel: **unlabeled** (–)  \nsuggested: **owl** (0.50)"
    assert "first 24" in text.disputed_caption(30)
    stats = {"images": 6, "usable": 5, "classes": CLASSES, "labeled": 2, "unlabeled": 3, "broken": [("x", "y")],
             "backbone": "b", "input_size": 64, "device": "cpu", "rounds": 1}
    # usable images only: the broken file is counted apart
    assert text.project_metrics(stats) == [("Images", "5", "5"), ("Classes", "3", "3"), ("Labeled", "2", "2"),
                                           ("Unlabeled", "3", "3")]
    big = text.project_metrics({**stats, "usable": 1_000_000, "labeled": 12_345, "unlabeled": 987_655})
    assert big[0] == ("Images", "1.00M", "1,000,000") and big[2][1:] == ("12.3k", "12,345") and big[3][1] == "988k"
    assert text.project_caption(stats) == ("1 broken file(s), not counted (see Dataset) · backbone b @ 64 px · "
                                           "cpu · 1 round(s)")
    assert text.project_caption({**stats, "broken": []}) == "backbone b @ 64 px · cpu · 1 round(s)"
    assert selected_image({"selection": {"points": [{"customdata": [7, "cat", "seed"]}]}}) == 7
    assert selected_image({"selection": {"points": []}}) is None and selected_image(None) is None


def test_app_state_from_the_command_line(tmp_path: Path) -> None:
    assert app_state([], tmp_path)["folder"] == str(tmp_path)
    state = app_state(["--folder", "x", "--image-size", "64", "--no-umap", "--foreign", "1"], tmp_path)
    assert (state["folder"], state["image_size"], state["umap_auto"], state["project_dir"]) == ("x", 64, False, None)
    assert app_state(["--image-size", "big"], tmp_path)["image_size"] is None  # malformed: the defaults


def test_attempt_turns_user_errors_into_messages() -> None:
    assert attempt(int, "5").result == 5 and attempt(int, "5").error is None
    assert attempt({}.__getitem__, "unknown image id 3").error == "unknown image id 3"
    assert user_message(KeyError("k")) == "k"
    with pytest.raises(TypeError):
        attempt(len, 5)  # a programming error is not shown as a message


class _Pool:
    ids = np.array([3, 4])
    features = np.ones((2, 5), dtype=np.float64)

    def __len__(self) -> int:
        return 2


class _Round:
    round = 1
    ids = np.array([4])
    embeddings = np.zeros((1, 2), dtype=np.float32)
    probs = None


def test_dispute_space_and_project_helpers(tmp_path: Path) -> None:
    ids, x = dispute_arrays("embedding", None, _Pool())  # before any round: the backbone features
    assert ids.tolist() == [3, 4] and x.dtype == np.float32 and x.shape == (2, 5)
    assert dispute_arrays("embedding", _Round(), _Pool())[1].shape == (1, 2)
    assert dispute_arrays("backbone", _Round(), _Pool())[1].shape == (2, 5)
    with pytest.raises(ValueError, match="space"):
        dispute_arrays("pixels", None, _Pool())
    first = default_export_dir(tmp_path / "my images", 3, base=tmp_path / "models")
    assert first == tmp_path / "models" / "my_images-round3"
    first.mkdir(parents=True)
    assert default_export_dir(tmp_path / "my images", 3, base=tmp_path / "models").name == "my_images-round3-2"
    assert default_export_dir(tmp_path / "x", None, base=tmp_path).name == "x"


@pytest.mark.parametrize("n, text", [(0, "0"), (9_999, "9,999"), (10_000, "10.0k"), (99_950, "100k"),
                                     (999_499, "999k"), (999_999, "1.00M"), (12_345_678, "12.3M"),
                                     (5_000_000_000, "5.00B")])
def test_short_counts_fit_five_characters(n: int, text: str) -> None:
    assert short_count(n) == text and len(text) <= 5


def test_trust_notes_meter_warning_and_flags() -> None:
    from labeltool.eval.calibration import BatchEstimate
    from labeltool.rounds.proposal import Coverage
    from labeltool.ui.pages import trust_notes

    cov = Coverage(BatchEstimate(0.8, 0.75, 0.85, 100, "b"), 100, 0, 40, 0.99)
    good = trust_notes(PrecisionEstimate(0.95, "b", 0.9, 0.97), cov, [], 0.9)
    assert [k for k, _, _ in good] == ["meter"] and "0.80** [0.75, 0.85]" in good[0][1] and "**40** review" in good[0][1]
    assert good[0][2] == 0.8
    bad = trust_notes(PrecisionEstimate(0.7, "b", 0.6, 0.8), None, ["'shirt' has 82 labels"], 0.9)
    assert [k for k, _, _ in bad] == ["warning", "warning"]
    assert "one by one" in bad[0][1] and "by hand" in bad[0][1] and "end to end" in bad[0][1] and "shirt" in bad[1][1]
    assert "mode *finetune*" in bad[0][1]
    after_e2e = trust_notes(PrecisionEstimate(0.7, "b", 0.6, 0.8), None, [], 0.9, end_to_end=True)
    assert "one by one" in after_e2e[0][1] and "already trained the network end to end" in after_e2e[0][1]
    assert "*finetune*" not in after_e2e[0][1]  # not advised again after such a round
    assert trust_notes(None, None, [], 0.9) == []

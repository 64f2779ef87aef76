"""The review page's held layout, its empty states, the round message, export defaults and figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labeltool.data.decisions import LabelState
from labeltool.suggest.propose import Suggestion
from labeltool.ui import figures
from labeltool.ui.cards import HOLD, batch_buttons
from labeltool.ui.pages import (
    OVERWRITE_LABEL,
    RoundOutcome,
    decision_mark,
    export_controls,
    export_options,
    nothing_to_review,
    review_page,
)
from labeltool.ui.project_views import default_export_dir, export_base
from labeltool.ui.queue import PrecisionEstimate

CLASSES = ["cat", "dog", "owl"]


def _pending(n: int) -> list[Suggestion]:
    return [Suggestion(i, i % 3, 1 - i / 100, "knn", None, (100 + i,), i) for i in range(n)]


def _state(labels: dict[int, int], rejected: set[tuple[int, int]]) -> LabelState:
    state = LabelState()
    state.labels.update(labels)
    state.rejected.update(rejected)
    return state


def _page(pending: list[Suggestion], state: LabelState, layout: object = None) -> object:
    return review_page(pending, CLASSES, {"page_size": 6}, 1, labeled=len(state.labels), state=state,
                       precision=lambda rows: PrecisionEstimate(0.5, f"{len(rows)}"), layout=layout,
                       name_of=lambda i: f"img{i}.png")


def test_decided_cards_keep_their_place_until_the_page_is_laid_out_again() -> None:
    pending = _pending(10)
    first = _page(pending, _state({}, set()))
    assert [s.image_id for s in first.layout] == [0, 1, 2, 3, 4, 5] and first.held == 0
    # image 1 accepted (as dog), image 3 rejected: both leave the queue
    state = _state({1: 1}, {(3, 0)})
    rest = [s for s in pending if s.image_id not in (1, 3)]
    kept = _page(rest, state, layout=first.layout)
    assert [c.image_id for c in kept.cards] == [0, 1, 2, 3, 4, 5]  # no reflow
    assert [s.image_id for s in kept.shown] == [0, 2, 4, 5] and kept.held == 2 and kept.waiting == 8
    assert "~~dog~~" in kept.cards[1].text and [b.label for b in kept.cards[1].buttons][0] == "Accepted"
    assert [b.label for b in kept.cards[3].buttons][1] == "Rejected" and all(b.disabled for b in kept.cards[3].buttons)
    assert not any(b.disabled for b in kept.cards[0].buttons)
    assert kept.buttons[0].label == "Accept all shown (4)"  # batch actions only on the pending cards
    assert kept.buttons[-1].key == "next_cards" and kept.buttons[-1].state == {HOLD: None}
    fresh = _page(rest, state)  # laid out again: the next suggestions fill the page
    assert [c.image_id for c in fresh.cards] == [0, 2, 4, 5, 6, 7]
    assert all(b.after == {HOLD: None} for b in batch_buttons(fresh.shown)[:3])  # batches and undo lay it out again
    assert decision_mark(pending[2], _state({2: 0}, set())) == "decided"  # labeled as another class


def test_empty_review_page_says_what_to_do_next() -> None:
    assert "first round" in nothing_to_review(0, False, 300)
    done = nothing_to_review(2, False, 0)
    assert "project is done" in done and "**Export**" in done
    left = nothing_to_review(2, False, 12)
    assert "Nothing left to review" in left and "**Export**" in left and "12" in left
    assert "all classes" in nothing_to_review(2, True, 12)
    out = RoundOutcome({"round": 2, "steps": 300, "train_seconds": 1.5, "final_loss": 2e-7}, _pending(3))
    assert out.message.endswith("3 suggestions to review in the **Review** tab.") and "2e-07" in out.message


def test_export_options_say_what_they_export() -> None:
    controls = {c.key: c for c in export_controls()}
    assert controls["ex_include_pending"].default is False
    assert "pending" in controls["ex_include_pending"].label and "suggested" in (controls["ex_include_pending"].help or "")
    assert controls["ex_include_pseudo"].label == "Include labels accepted without review"
    assert controls["ex_overwrite"].label == OVERWRITE_LABEL
    values = {k: c.default for k, c in controls.items()}
    assert export_options(values)["include_pending"] is False


def test_default_export_folder_is_outside_the_images_and_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, repo = tmp_path / "home", tmp_path / "repo"
    images = repo / "sample_data"
    images.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert export_base(images, avoid=[repo]) == home.resolve() / "labeltool-exports"
    out = default_export_dir(images, 3, avoid=[repo])
    assert out == home.resolve() / "labeltool-exports" / "sample_data-round3"
    assert repo not in out.parents and images not in out.parents
    # a home inside the app's folder: beside the image folder instead, or the temp folder
    monkeypatch.setenv("HOME", str(repo / "x"))
    base = export_base(images, avoid=[repo])
    assert repo.resolve() not in base.parents and base != repo.resolve()


def test_unlabeled_points_look_like_no_class() -> None:
    def grey(c: str) -> bool:
        r, g, b = (int(c[i:i + 2], 16) for i in (1, 3, 5))
        return max(r, g, b) - min(r, g, b) < 40  # no hue
    assert not any(grey(c) for c in figures._PALETTE)
    frame = pd.DataFrame({"image_id": [1, 2, 3], "x": [0.0, 1, 2], "y": [0.0, 1, 2],
                          "label": ["unlabeled", "sneaker", "bag"], "source": ["unlabeled", "seed", "seed"],
                          "confidence": [np.nan] * 3, "labeled": [False, True, True]})
    traces = {t.name: t for t in figures.scatter_figure(frame).data}
    assert traces["unlabeled"].marker.symbol == "circle-open"
    assert all(traces[n].marker.symbol is None for n in ("sneaker", "bag"))


def test_loss_chart_ticks_and_compactness_help() -> None:
    from labeltool.ui.pages import TrainProgress

    assert TrainProgress().update(1, 9, 3.95e-5, now=0.0)[1] == "Training: step 1/9 · loss 3.95e-05"
    fig = figures.loss_figure([3e-7, 2e-7, 1e-7])
    assert fig.layout.yaxis.tickformat == ".3~g" and fig.layout.yaxis.exponentformat == "e"
    for name in ("C-Inter", "W-Inter", "WC-Intra"):
        assert f"**{name}**" in figures.COMPACTNESS_HELP
    df = figures.rounds_frame([])
    names = [t.name for t in figures.rounds_figure(df).data]
    assert any(n.startswith("C-Inter (") for n in names) and any(n.startswith("WC-Intra (") for n in names)

"""The app's path from the first load to the export, and the review page's single-card actions."""

from __future__ import annotations

from pathlib import Path

from app_helpers import REPO, make_app, no_trouble

from labeltool.session import LabelingSession


def _card_ids(at: object) -> list[int]:
    return [int(b.key.split("_")[1]) for b in at.button if b.key and b.key.startswith("acc_")]  # type: ignore[attr-defined]


def _messages(at: object) -> list[str]:
    """The success boxes and the Review page's one-line messages."""
    return [s.value for s in at.success] + [m.value for m in at.markdown if m.value.startswith(":green[")]  # type: ignore[attr-defined]


def test_first_round_from_review_then_done_leads_to_export(app_folder: Path) -> None:
    at = make_app(app_folder).run()
    no_trouble(at)
    assert any("first round" in i.value for i in at.info)  # not an empty page: what to do first
    at.number_input(key="max_steps").set_value(20)
    at.radio(key="mode").set_value("head")  # the flow, not the choice of mode (tests/session/test_auto_mode.py)
    at.number_input(key="batch_size").set_value(6)
    at.button(key="first_round").click().run()
    no_trouble(at)
    assert any("Round 1" in m and "Review" in m for m in _messages(at))
    assert len(_card_ids(at)) == 6 and at.session_state["tab"] == "Review"

    at.button(key="accept_all").click().run()
    no_trouble(at)
    assert not _card_ids(at)
    assert any("Nothing left to review" in i.value and "Export" in i.value for i in at.info)
    at.button(key="go_export").click().run()
    no_trouble(at)
    assert at.session_state["tab"] == "Export"
    default = Path(at.text_input(key="export_dir").value).resolve()
    for inside in (REPO.resolve(), app_folder.resolve()):
        assert default != inside and inside not in default.parents


def test_train_round_message_leads_to_review(trained_folder: Path) -> None:
    at = make_app(trained_folder, tab="Train").run()
    at.number_input(key="max_steps").set_value(20)
    at.radio(key="mode").set_value("head")  # the flow, not the choice of mode (tests/session/test_auto_mode.py)
    at.button(key="run_round").click().run()
    no_trouble(at)
    assert any("**Review** tab" in s.value for s in at.success)
    at.button(key="go_review").click().run()
    assert at.session_state["tab"] == "Review" and _card_ids(at)


def test_single_reject_names_the_file_offers_undo_and_keeps_the_card(trained_folder: Path) -> None:
    at = make_app(trained_folder).run()
    ids = _card_ids(at)
    target = ids[1]
    with LabelingSession.open(trained_folder) as s:
        name = Path(s.image_rows()[target].relpath).name
        before = len(s.label_state().labels)
    at.button(key=f"rej_{target}").click().run()
    no_trouble(at)
    assert any("Rejected" in m and name in m for m in _messages(at))
    assert _card_ids(at) == ids  # the grid did not reflow
    assert at.button(key=f"rej_{target}").disabled and at.button(key=f"acc_{target}").disabled
    assert at.button(key=f"rej_{target}").label == "Rejected"

    accepted = ids[0]
    at.button(key=f"acc_{accepted}").click().run()
    no_trouble(at)
    assert _card_ids(at) == ids
    sidebar = {m.label: m.value for m in at.sidebar.metric}
    assert sidebar["Labeled"] == str(before + 1)  # the sidebar follows a single click

    assert at.button(key="next_cards").label == "Show the next suggestions (2 decided)"
    at.button(key="undo").click().run()  # takes back the accept; the page is laid out again
    no_trouble(at)
    with LabelingSession.open(trained_folder) as s:
        assert accepted not in s.label_state().labels
    assert accepted in _card_ids(at) and not at.button(key=f"acc_{accepted}").disabled
    assert target not in _card_ids(at)  # the rejected one is gone now


def test_reject_message_undo_button_restores_the_card(trained_folder: Path) -> None:
    at = make_app(trained_folder).run()
    target = _card_ids(at)[0]
    at.button(key=f"rej_{target}").click().run()
    at.button(key="undo_flash").click().run()
    no_trouble(at)
    with LabelingSession.open(trained_folder) as s:
        assert target in {x.image_id for x in s.pending_suggestions()}
    assert not at.button(key=f"rej_{target}").disabled


def test_evidence_captions_are_file_names_and_refusal_names_the_checkbox(trained_folder: Path, tmp_path: Path) -> None:
    at = make_app(trained_folder).run()
    target = _card_ids(at)[0]
    at.button(key=f"ev_{target}").click().run()
    no_trouble(at)
    with LabelingSession.open(trained_folder) as s:
        rows = s.image_rows()
        evidence = next(x for x in s.pending_suggestions() if x.image_id == target).evidence
    captions = [c for img in at.get("image") for c in img.captions if c]
    assert f"suggested: {Path(rows[target].relpath).name}" in captions
    assert {Path(rows[i].relpath).name for i in evidence} <= set(captions)

    at = make_app(trained_folder, tab="Export").run()
    at.text_input(key="export_dir").set_value(str(tmp_path / "out"))
    at.checkbox(key="ex_model").uncheck().run()  # the refusal is about the folder, not what is in it
    at.button(key="export").click().run()
    no_trouble(at)
    assert (tmp_path / "out" / "dataset").is_dir() and not (tmp_path / "out" / "model").exists()
    at.button(key="export").click().run()
    assert any("tick **Overwrite a previous export**" in e.value for e in at.error)
    assert not any("--overwrite" in e.value for e in at.error)

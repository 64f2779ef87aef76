"""The app's flows through streamlit.testing.v1.AppTest, checked against the project's store."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd
from app_helpers import labeled_count, make_app, no_trouble
from streamlit.testing.v1 import AppTest

from labeltool.session import LabelingSession


def _tab(at: AppTest, name: str) -> AppTest:
    at.session_state["tab"] = name
    return at.run()


def _shown(at: AppTest) -> int:
    label = at.button(key="accept_all").label
    return int(re.search(r"\((\d+)\)", label).group(1))  # type: ignore[union-attr]


def _suggestion_keys(at: AppTest, prefix: str) -> list[str]:
    return [b.key for b in at.button if b.key and b.key.startswith(prefix)]


def test_round_accept_reject_undo_export(app_folder: Path, tmp_path: Path) -> None:
    at = make_app(app_folder).run()
    no_trouble(at)
    assert labeled_count(app_folder) == 50
    assert at.button(key="accept_all").disabled  # nothing to review before the first round

    # run a round through the Train tab, with a short schedule and a batch of 24
    at.number_input(key="max_steps").set_value(20)
    at.radio(key="mode").set_value("head")  # the flow, not the choice of mode (tests/session/test_auto_mode.py)
    at.number_input(key="batch_size").set_value(24)
    _tab(at, "Train")
    at.button(key="run_round").click().run()
    no_trouble(at)
    assert any("Round 1" in s.value for s in at.success)
    with LabelingSession.open(app_folder) as s:
        assert len(s.store.rounds()) == 1
        assert len(s.pending_suggestions()) == 24
    assert at.get("plotly_chart"), "the rounds chart is drawn"

    # accept the shown page (12 of the 24): the store gains exactly that many labels
    _tab(at, "Review")
    at.selectbox(key="page_size").set_value(12).run()
    shown = _shown(at)
    assert shown == 12
    before = labeled_count(app_folder)
    at.button(key="accept_all").click().run()
    no_trouble(at)
    assert labeled_count(app_folder) == before + shown
    assert at.metric[0].label == "Labeled" and at.metric[0].value == str(before + shown)

    # reject one: no label changes, the pair is recorded as rejected
    key = _suggestion_keys(at, "rej_")[0]
    image_id = int(key.split("_")[1])
    at.button(key=key).click().run()
    no_trouble(at)
    with LabelingSession.open(app_folder) as s:
        state = s.label_state()
        assert len(state.labels) == before + shown
        assert any(i == image_id for i, _ in state.rejected)
        assert image_id not in {x.image_id for x in s.pending_suggestions()}

    # undo takes back the reject, a second undo the accepted batch
    at.button(key="undo").click().run()
    no_trouble(at)
    with LabelingSession.open(app_folder) as s:
        assert not any(i == image_id for i, _ in s.label_state().rejected)
    at.button(key="undo").click().run()
    assert labeled_count(app_folder) == before

    # accept again and export: files appear and the manifest matches the store
    at.button(key="accept_all").click().run()
    _tab(at, "Export")
    out = tmp_path / "export"
    at.text_input(key="export_dir").set_value(str(out))
    at.button(key="export").click().run()
    no_trouble(at)
    assert (out / "dataset" / "manifest.csv").exists() and (out / "dataset" / "manifest.parquet").exists()
    assert (out / "model").is_dir() and any((out / "model").iterdir())
    manifest = pd.read_parquet(out / "dataset" / "manifest.parquet")
    with LabelingSession.open(app_folder) as s:
        state, classes, rows = s.label_state(), s.classes, s.image_rows()
        expected = {rows[i].relpath: classes[c] for i, c in state.labels.items()}
    assert dict(zip(manifest["source_path"], manifest["label"], strict=True)) == expected
    for path in manifest["path"]:
        assert (out / "dataset" / path).is_file()
    with open(out / "dataset" / "manifest.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(expected)
    assert at.get("download_button"), "the manifest can be downloaded"

    for name in ("Explore", "Dataset", "Review"):
        no_trouble(_tab(at, name))


def _reading_order(values: list[float], columns: int = 6) -> list[float]:
    """Cards in the order a person reads the grid: the app tree lists them column by column,
    card ``n`` sitting in column ``n % columns``."""
    cols, start = [], 0
    for j in range(columns):
        count = len(range(j, len(values), columns))
        cols.append(values[start : start + count])
        start += count
    return [cols[n % columns][n // columns] for n in range(len(values))]


def test_relabel_filter_sort_and_evidence(trained_folder: Path) -> None:
    at = make_app(trained_folder).run()
    no_trouble(at)
    with LabelingSession.open(trained_folder) as s:
        classes = s.classes
        pending = s.pending_suggestions()
    target = pending[0]

    # filter by the class of one suggestion: every card shows that class
    name = classes[target.class_id]
    at.selectbox(key="filter_class").set_value(name).run()
    cards = [m.value for m in at.markdown if m.value.startswith("**") and " · " in m.value]
    assert cards and all(c.startswith(f"**{name}**") for c in cards)
    assert _shown(at) == sum(1 for p in pending if p.class_id == target.class_id)
    at.selectbox(key="filter_class").set_value("all classes").run()

    # low first: the confidences on the cards ascend, in reading order
    at.radio(key="order").set_value("low first").run()
    conf = _reading_order([float(m.value.rsplit(" · ", 1)[1]) for m in at.markdown
                           if m.value.startswith("**") and " · " in m.value])
    assert conf == sorted(conf) and len(set(conf)) > 1

    # evidence on demand
    at.button(key=f"ev_{target.image_id}").click().run()
    assert any(m.value.startswith(f"**Evidence for image {target.image_id}**") for m in at.markdown)

    # assign another class from the same panel: the suggestion is rejected, the image takes the class
    other = classes[(target.class_id + 1) % len(classes)]
    at.selectbox(key=f"fix_{target.image_id}").set_value(other).run()
    no_trouble(at)
    with LabelingSession.open(trained_folder) as s:
        state = s.label_state()
        assert state.labels[target.image_id] == classes.index(other)
        assert (target.image_id, target.class_id) in state.rejected


def test_errors_are_messages_not_tracebacks(trained_folder: Path, tmp_path: Path) -> None:
    at = make_app(trained_folder, tab="Export").run()
    at.text_input(key="export_dir").set_value(str(trained_folder / "inside")).run()
    at.button(key="export").click().run()
    assert not at.exception
    assert any("inside the image folder" in e.value for e in at.error)

    missing = make_app(tmp_path / "does-not-exist").run()
    assert not missing.exception
    assert any("does not exist" in e.value for e in missing.error)


def test_sidebar_renders_every_loss(trained_folder: Path) -> None:
    at = make_app(trained_folder, tab="Train").run()
    losses = at.selectbox(key="loss").options
    with LabelingSession.open(trained_folder) as s:
        catalog = s.loss_catalog()
    assert losses == list(catalog) and "cross_entropy" in losses
    for name in losses:
        at.selectbox(key="loss").set_value(name).run()
        no_trouble(at)
        assert ("softmax" in at.selectbox(key="source").options) == catalog[name].has_classifier
        shown = {n.label for n in at.sidebar.number_input} | {c.label for c in at.sidebar.checkbox}
        shown |= {b.label for b in at.sidebar.selectbox}
        assert {p.name for p in catalog[name].hyperparams} <= shown
    at.number_input(key="dim").set_value(3).run()  # below C-1 = 9
    assert any("C-1" in w.value for w in at.warning)
    at.radio(key="mode").set_value("finetune").run()
    no_trouble(at)  # the fine-tune settings render and make a valid config
    assert at.number_input(key="ft_stages").value == 2

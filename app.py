"""labeltool in the browser: review suggestions in batches, train rounds, explore, export.

    streamlit run app.py                                   # the bundled sample_data/
    streamlit run app.py -- --folder PATH [--project-dir DIR] [--image-size N] [--no-umap]

The page layout: all computing and writing goes through LabelingSession; renderers are in app_widgets.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

import app_widgets as widgets
from app_widgets import act, bump, button, control, controls, grid, kept, show_flash, stats, tab_button, thumb
from app_widgets import notes as show_notes
from labeltool.session import LabelingSession, SuggestConfig, TrainConfig

HOLD = LabelingSession.review_hold_key()
SAMPLE = (REPO := Path(__file__).resolve().parent) / "sample_data"
TABS = ["Review", "Train", "Explore", "Dataset", "Export"]
ss = st.session_state


# ---------------------------------------------------------------------------- session calls
def guard(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run a session call; show its error instead of a traceback (returns None then)."""
    out = LabelingSession.attempt(fn, *args, **kw)
    if out.error is not None:
        st.error(out.error)
    return out.result


@st.cache_resource(show_spinner="Opening the project…", max_entries=4)
def open_session(folder: str, project_dir: str | None, image_size: int | None) -> LabelingSession:
    return LabelingSession.open_for_app(folder, project_dir=project_dir, image_size=image_size, protected=[SAMPLE])


# ---------------------------------------------------------------------------- sidebar
def sidebar_project(session: LabelingSession | None) -> None:
    with st.form("open_folder", border=False):
        folder = st.text_input("Image folder", value=ss.folder, help="A folder of images; class sub-folders are the seed")
        if st.form_submit_button("Open folder") and folder.strip() != ss.folder:
            ss.folder, ss.page_input, ss.evidence_for, ss.last_export = folder.strip(), 1, None, None
            ss.thumbs = {}
            st.rerun()
    if session is None:
        return
    s = stats(session)
    st.caption(f"Project: `{s['project_dir']}`")
    cols = st.columns(2)
    for n, (label, value, exact) in enumerate(session.text.project_metrics(s)):
        cols[n % 2].metric(label, value, help=exact)
    st.caption(session.text.project_caption(s))
    if st.button("Rescan folder", help="Pick up added, changed or removed images"):
        if guard(session.scan) is not None:
            ss.embed_checked, ss.thumbs = None, {}
            bump()
            st.rerun()


def sidebar_settings(session: LabelingSession) -> tuple[TrainConfig | None, SuggestConfig | None]:
    """The Training and Suggestions sections; their configs (None where a value is invalid)."""
    with st.expander("Training", expanded=True):
        loss = control(session.loss_control())
        st.caption(session.loss_catalog()[loss].caption)
        items = session.train_controls(loss)
        values = controls(items)
        if warning := session.embedding_dim_warning(values["dim"]):
            st.warning(warning)
        with st.expander("Advanced"):
            controls(items, values, group="advanced")
        tcfg = guard(session.train_config_from, loss, values)
    with st.expander("Suggestions", expanded=False):
        scfg = guard(session.suggest_config_from, controls(session.suggest_controls(loss)))
    return tcfg, scfg


# ---------------------------------------------------------------------------- Review
@st.fragment
def review_page(session: LabelingSession, tcfg: TrainConfig | None, scfg: SuggestConfig | None) -> None:
    if ss.pop("rerun_app", False):  # a decision: refresh the sidebar counts too
        st.rerun(scope="app")
    show_flash(session, session.undo_button("undo_flash"), idle=session.text.review_hint)
    if ss.pop("first_page", False):  # a new round: its batch from the top
        ss.page_input = 1
    cols = st.columns([2, 2, 1, 1])
    values = controls(session.page_controls("review"), cols=cols)
    # the page keeps its cards in place while they are decided one by one, until it is laid out again
    key = (tuple(sorted(values.items())), ss.get("page_input", 1), stats(session)["rounds"])
    view = session.review_page(values, ss.get("page_input", 1), layout=kept(HOLD, key))
    ss[HOLD] = (key, view.layout) if ss.get("page_input", 1) == view.page + 1 else None
    if ss[HOLD] is None:
        ss.page_input = view.page + 1
    cols[3].number_input("Page", 1, view.pages, key="page_input")
    for col, (label, value, help_) in zip(st.columns(3), view.metrics, strict=True):
        col.metric(label, value, help=help_)
    show_notes(session.trust_notes(view.shown))
    for col, b in zip(st.columns([1, 1, 1, 2]), view.buttons, strict=False):
        with col:
            button(session, b)
    if not view.cards:
        nothing_left(session, tcfg, scfg, filtered=values.get("filter_class") not in (None, "all classes"))
        return
    if ss.evidence_for is not None and (s := {s.image_id: s for s in view.shown}.get(ss.evidence_for)) is not None:
        evidence_dialog(session, s)
    grid(session, view.cards)


def nothing_left(session: LabelingSession, tcfg: TrainConfig | None, scfg: SuggestConfig | None, filtered: bool) -> None:
    """The empty Review page: run the first round from here, or the project is done: go to Export."""
    s = stats(session)
    st.info(session.text.nothing_to_review(s["rounds"], filtered, s["unlabeled"]))
    if filtered:
        return
    if s["rounds"] == 0:
        if st.button("Run the first round", type="primary", key="first_round", disabled=tcfg is None or scfg is None,
                     help="Train on the seed labels and propose the first batch to review"):
            run_round(session, tcfg, scfg)
        return
    with st.container(horizontal=True):
        tab_button("Go to Export", "Export", primary=True)
        tab_button("Go to Train", "Train")


def relabel(session: LabelingSession, s: Any) -> None:
    choice = ss.get(f"fix_{s.image_id}")
    if choice is not None:
        ss.evidence_for = None
        act(session, session.reject, s.image_id, s.class_id, session.classes.index(choice), app=True,
            ok=f"`{session.file_name(s.image_id)}` → **{choice}**")


@st.dialog("Evidence", width="large", on_dismiss=lambda: ss.update(evidence_for=None))
def evidence_dialog(session: LabelingSession, s: Any) -> None:
    """One suggestion up close, over the page (which stays where it is): its evidence, and a class to assign instead."""
    if ss.get("evidence_for") != s.image_id:  # a class was assigned: close
        st.rerun()
    st.markdown(session.text.evidence_title(s))
    st.selectbox("Assign another class", session.text.other_classes(s.class_id), index=None,
                 key=f"fix_{s.image_id}", placeholder="choose a class…", on_change=relabel, args=(session, s))
    for col, (i, caption) in zip(st.columns(max(6, len(s.evidence) + 1)), session.evidence_thumbs(s),
                                 strict=False):
        with col:
            thumb(session, i, caption)


# ---------------------------------------------------------------------------- Train
def train_page(session: LabelingSession, tcfg: TrainConfig | None, scfg: SuggestConfig | None) -> None:
    round_done = ss.pop("round_done", False)
    show_flash()
    if round_done:  # the round's message is above: its batch is in Review
        tab_button("Go to Review", "Review", primary=True)
    st.markdown("A round trains the embedding on every label so far, embeds all images and proposes the next "
                f"batch.  \n:gray[{session.training_line()}]")
    if st.button("Run a round", type="primary", disabled=tcfg is None or scfg is None, key="run_round"):
        run_round(session, tcfg, scfg)
    fig = session.rounds_figure()
    if fig is None:
        st.info("No rounds yet.")
        return
    st.plotly_chart(fig, key="rounds_chart")
    st.caption("Compactness: C-Inter, W-Inter, WC-Intra (hover the **?**)", help=session.compactness_help())
    with st.expander("Round table"):
        st.dataframe(session.rounds_table(), hide_index=True)


def run_round(session: LabelingSession, tcfg: Any, scfg: Any) -> None:
    widgets.job_waits_note(session.embed_job_progress_line)
    bar = st.progress(0.0, text="Training…")
    chart = st.empty()
    trace = session.train_progress()

    def progress(step: int, total: int, loss: float) -> None:
        done, text, redraw = trace.update(step, total, loss, time.monotonic())
        bar.progress(done, text=text)
        if redraw:
            chart.plotly_chart(session.loss_figure(trace.losses), key=f"loss_{len(trace.losses)}")

    outcome = guard(session.run_app_round, tcfg, scfg, progress=progress, continue_training=bool(ss["continue"]),
                    start_umap=ss.umap_auto, on_stage=lambda text, done: bar.progress(done, text=text))
    if outcome is None:
        return
    ss.evidence_for, ss[HOLD], ss.first_page = None, None, True
    bump()
    # run from Train: a button there leads to Review; run from Review (the first round): its batch is right here
    ss.flash, ss.round_done = ("success", outcome.message), ss.get("tab") == "Train"
    st.rerun()


# ---------------------------------------------------------------------------- Explore and Dataset
@st.fragment
def explore_page(session: LabelingSession) -> None:
    c1, c2 = st.columns([3, 1])
    color = controls(session.page_controls("explore"), cols=[c1])["color_by"]
    c2.button("Refresh", key="explore_refresh")
    proj = guard(session.projection, start_umap=ss.umap_auto)
    if proj is None:
        return
    st.caption(proj.note)
    if proj.method != "umap" and not ss.umap_auto and st.button("Compute UMAP in the background", key="umap_now"):
        session.projection(start_umap=True)
        st.rerun(scope="fragment")
    if len(proj.ids) == 0:
        st.info("Nothing to show yet.")
        return
    event = st.plotly_chart(session.explore_figure(proj, color or "label"), key="explore_plot", on_select="rerun",
                            selection_mode="points", config={"scrollZoom": True})
    image_id = session.selected_image(event)
    if image_id is not None:
        info = guard(session.image_info, image_id)
        if info:
            a, b = st.columns([1, 3])
            with a:
                thumb(session, image_id)
            b.markdown(session.text.image_caption(info))


@st.fragment
def dataset_page(session: LabelingSession) -> None:
    show_flash()
    st.subheader("Images per class")
    st.plotly_chart(session.class_counts_figure(), key="class_counts")
    broken = stats(session)["broken"]
    if broken:
        with st.expander(f"{len(broken)} file(s) could not be used"):
            st.dataframe([{"file": p, "reason": r} for p, r in broken], hide_index=True)
    st.subheader("Labels to re-check")
    v = controls(session.page_controls("dataset"), cols=st.columns(3))
    disputed = guard(session.disputed_labels, k=v["dispute_k"], min_share=v["dispute_share"], space=v["dispute_space"])
    if disputed is None:
        return
    if not disputed:
        st.success(session.text.no_dispute(v["dispute_space"]))
        return
    st.caption(session.text.disputed_caption(len(disputed)))
    grid(session, session.dispute_cards(disputed))


# ---------------------------------------------------------------------------- Export
def export_page(session: LabelingSession) -> None:
    if not ss.get("export_dir"):
        ss.export_dir = str(session.default_export_dir(avoid=[REPO]))
    out = st.text_input("Export folder", key="export_dir",
                        help="dataset/ (one folder per class + manifest) and model/ are written here, atomically")
    items = session.page_controls("export")
    options = session.export_options(controls(items, cols=[c for _ in range(0, len(items), 3) for c in st.columns(3)]))
    if st.button("Export", type="primary", key="export"):
        with st.spinner("Exporting…"):
            done = guard(session.export_from_app, out, **options)
        if done is not None:
            ss.last_export = str(done)
            st.success(f"Exported to {done}")
    if ss.last_export:
        summary = guard(session.export_summary, ss.last_export)
        if summary:
            st.markdown(session.text.export_caption(summary))
            if summary["manifest_csv"] is not None:
                st.download_button("Download manifest.csv", summary["manifest_csv"], file_name="manifest.csv",
                                   mime="text/csv", key="manifest_download", on_click="ignore")


# ---------------------------------------------------------------------------- page
def main() -> None:
    st.set_page_config(page_title="labeltool", layout="wide")
    for k, v in LabelingSession.app_state(sys.argv[1:], SAMPLE).items():
        ss.setdefault(k, v)
    with st.sidebar:
        st.title("labeltool")
        session = guard(open_session, ss.folder, ss.project_dir, ss.image_size)
        sidebar_project(session)
        if session is None:
            return
        tcfg, scfg = sidebar_settings(session)
    missing = session.missing_features() if ss.get("embed_checked") != ss.folder else 0
    ss.embed_checked = ss.folder
    if missing and session.embed_job_progress_line() is None:  # the labeled images and a sample now, the rest later
        if guard(session.embed_first, *widgets.progress_bar(f"Embedding {missing} images…", "Embedding images")) is None:
            return
        bump()
        st.rerun()
    widgets.live_progress(session.embed_job_progress_line)
    tabs = st.tabs(TABS, key="tab", on_change="rerun")
    pages: list[Callable[[], None]] = [
        lambda: review_page(session, tcfg, scfg), lambda: train_page(session, tcfg, scfg), lambda: explore_page(session),
        lambda: dataset_page(session), lambda: export_page(session),
    ]
    for tab, page in zip(tabs, pages, strict=True):
        with tab:
            if tab.open:
                page()


main()

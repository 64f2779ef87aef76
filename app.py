"""labeltool in the browser: review suggestions in batches, train rounds, explore, export.

    streamlit run app.py                                   # the bundled sample_data/
    streamlit run app.py -- --folder PATH [--project-dir DIR] [--image-size N] [--no-umap]

Layout and widgets only: every computation and every write goes through LabelingSession.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from labeltool.session import LabelingSession, SuggestConfig, TrainConfig

DEFAULT_TRAIN = TrainConfig()

REPO = Path(__file__).resolve().parent
SAMPLE = REPO / "sample_data"
ERRORS = (ValueError, RuntimeError, KeyError, OSError, FloatingPointError, NotImplementedError)
TABS = ["Review", "Train", "Explore", "Dataset", "Export"]
ss = st.session_state


# ---------------------------------------------------------------------------- state and helpers
def cli_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--folder")
    p.add_argument("--project-dir")
    p.add_argument("--image-size", type=int)
    p.add_argument("--no-umap", action="store_true")
    try:
        return p.parse_known_args(sys.argv[1:])[0]
    except SystemExit:  # foreign arguments (e.g. under a test runner): use the defaults
        return p.parse_known_args([])[0]


def init_state() -> None:
    args = cli_args()
    defaults = {"folder": args.folder or str(SAMPLE), "project_dir": args.project_dir, "image_size": args.image_size,
                "umap_auto": not args.no_umap, "flash": None, "evidence_for": None, "last_export": None}
    for k, v in defaults.items():
        ss.setdefault(k, v)


def message(e: BaseException) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def guard(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run a session call; show its error instead of a traceback (returns None then)."""
    try:
        return fn(*args, **kw)
    except ERRORS as e:
        st.error(message(e))
        return None


def act(fn: Callable[..., Any], *args: Any, ok: str | Callable[[Any], str] | None = None, app: bool = False) -> None:
    """Widget callback: run a session write and leave a message for the next run."""
    try:
        result = fn(*args)
    except ERRORS as e:
        ss.flash = ("error", message(e))
        return
    ss.flash = ("success", ok(result) if callable(ok) else ok) if ok else None
    bump()
    if app:
        ss.rerun_app = True


def bump() -> None:
    """Something was written: cached counts are stale."""
    ss.version = ss.get("version", 0) + 1


def stats(session: LabelingSession) -> dict[str, Any]:
    """Project counts, recomputed only after a write (a full count reads every image row)."""
    key = (ss.folder, ss.get("version", 0))
    if ss.get("stats_key") != key:
        ss.stats, ss.stats_key = session.stats(), key
    return dict(ss.stats)


def show_flash() -> None:
    if ss.get("flash"):
        kind, text = ss.flash
        (st.error if kind == "error" else st.success)(text)
        ss.flash = None


@st.cache_resource(show_spinner="Opening the project…", max_entries=4)
def open_session(folder: str, project_dir: str | None, image_size: int | None) -> LabelingSession:
    return LabelingSession.open_for_app(folder, project_dir=project_dir, image_size=image_size, protected=[SAMPLE])


def thumb(session: LabelingSession, image_id: int, caption: str | None = None) -> None:
    """An image's cached thumbnail (its path is remembered until the next rescan)."""
    paths = ss.setdefault("thumbs", {})
    try:
        if image_id not in paths:
            paths[image_id] = str(session.thumbnail(image_id))
        st.image(paths[image_id], caption=caption, width="stretch")
    except ERRORS as e:
        st.caption(f"image {image_id}: {message(e)}")


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
    c1, c2 = st.columns(2)
    c1.metric("Images", s["images"])
    c2.metric("Classes", len(s["classes"]))
    c1.metric("Labeled", s["labeled"])
    c2.metric("Unlabeled", s["unlabeled"])
    st.caption(f"{len(s['broken'])} broken · backbone {s['backbone']} @ {s['input_size']} px · {s['device']} · "
               f"{s['rounds']} round(s)")
    if st.button("Rescan folder", help="Pick up added, changed or removed images"):
        if guard(session.scan) is not None:
            ss.embed_checked, ss.thumbs = None, {}
            bump()
            st.rerun()


def hyper_control(p: Any, key: str) -> Any:
    help_ = p.help or None
    if p.kind == "bool":
        return st.checkbox(p.name, value=bool(p.default), key=key, help=help_)
    if p.kind == "choice":
        return st.selectbox(p.name, list(p.choices), index=list(p.choices).index(p.default), key=key, help=help_)
    if p.kind == "int":
        return int(st.number_input(p.name, value=int(p.default), step=1, key=key, help=help_,
                                   min_value=int(p.low) if p.low is not None else None,
                                   max_value=int(p.high) if p.high is not None else None))
    return float(st.number_input(p.name, value=float(p.default), key=key, help=help_, format="%g",
                                 min_value=float(p.low) if p.low is not None else None,
                                 max_value=float(p.high) if p.high is not None else None))


def sidebar_training(session: LabelingSession) -> TrainConfig | None:
    catalog = session.loss_catalog()
    names = list(catalog)
    loss = st.selectbox("Loss", names, index=names.index("cross_entropy") if "cross_entropy" in names else 0, key="loss")
    info = catalog[loss]
    st.caption(("semi-supervised · " if info.uses_unlabeled else "supervised · ")
               + ("classifier head" if info.has_classifier else "no classifier (kNN / walk suggestions)"))
    params = {p.name: hyper_control(p, f"hp_{loss}_{p.name}") for p in info.hyperparams}
    mode = st.radio("Mode", session.setting_choices()["train_mode"], horizontal=True, key="mode",
                    help="head: a projection head on cached backbone features (seconds); finetune: the backbone's "
                         "last stages are trained on the images too (use a GPU)")
    finetune = None
    if mode == "finetune":
        stages = st.number_input("Backbone stages to train (0 = all)", 0, 20, 2, key="ft_stages")
        ft_epochs = st.number_input("Fine-tune epochs", 1, 200, 5, key="ft_epochs")
        backbone_lr = st.number_input("Backbone learning rate", 1e-7, 1.0, 1e-4, format="%g", key="ft_lr")
        augment = st.checkbox("Augment (random crops, flips)", True, key="ft_augment")
        finetune = {"stages": int(stages), "epochs": int(ft_epochs), "backbone_lr": float(backbone_lr),
                    "augment": augment}
    epochs = st.number_input("Epochs (head)", 1, 500, DEFAULT_TRAIN.epochs, key="epochs")
    dim = st.number_input("Embedding dimension (0 = automatic)", 0, 4096, 0, key="dim",
                          help=f"automatic = max(C-1, 64) = {session.default_embedding_dim()}")
    if warning := session.embedding_dim_warning(int(dim) or None):
        st.warning(warning)
    with st.expander("Advanced"):
        lr = st.number_input("Learning rate", 1e-6, 1.0, 1e-3, format="%g", key="lr")
        hidden = st.number_input("Hidden width", 8, 8192, 512, key="hidden")
        max_steps = st.number_input("Max steps", 1, 100000, DEFAULT_TRAIN.max_steps, key="max_steps")
        seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="seed")
        st.checkbox("Continue from the previous round", value=True, key="continue")
    return guard(TrainConfig, loss=loss, loss_params=params, embedding_dim=int(dim) or None, epochs=int(epochs),
                 lr=float(lr), hidden_dim=int(hidden), max_steps=int(max_steps),
                 min_steps=min(DEFAULT_TRAIN.min_steps, int(max_steps)), seed=int(seed), mode=mode, finetune=finetune)


def sidebar_suggest(session: LabelingSession, has_classifier: bool) -> SuggestConfig | None:
    choices = session.setting_choices()
    sources = [s for s in choices["source"] if has_classifier or s != "softmax"]
    source = st.selectbox("Source", sources, key="source", help="knn (safe default): nearest labeled images; walk "
                          "(best for association): association walk; softmax (best for cross_entropy, w_softmax, "
                          "center once labels are many): the classifier head; knn+walk: both must agree")
    confidence = st.selectbox("kNN confidence", choices["confidence"], index=1, key="knn_conf",
                              disabled=source not in ("knn", "knn+walk"))
    k = st.number_input("k (neighbours)", 1, 200, 10, key="k")
    by = st.radio("Batch by", ["size", "percent of pool"], horizontal=True, key="batch_by")
    size = st.number_input("Batch size", 1, 100000, 48, key="batch_size", disabled=by != "size")
    pct = st.number_input("Percent of the unlabeled pool", 0.1, 100.0, 5.0, key="percent", disabled=by == "size")
    stratified = st.checkbox("Stratified per predicted class", value=False, key="stratified")
    min_conf = st.slider("Minimum confidence", 0.0, 1.0, 0.0, 0.01, key="min_conf")
    return guard(SuggestConfig, source=source, confidence=confidence, k=int(k),
                 batch_size=int(size) if by == "size" else None, percent=float(pct) if by != "size" else None,
                 stratified=stratified, min_confidence=float(min_conf))


# ---------------------------------------------------------------------------- Review
@st.fragment
def review_page(session: LabelingSession) -> None:
    if ss.pop("rerun_app", False):  # a batch action: refresh the sidebar counts too
        st.rerun(scope="app")
    show_flash()
    classes = session.classes
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    which = c1.selectbox("Class", ["all classes", *classes], key="filter_class")
    order = c2.radio("Sort by confidence", ["high first", "low first"], horizontal=True, key="order")
    size = c3.selectbox("Per page", [12, 24, 48, 96], index=2, key="page_size")
    queue = session.review_queue(None if which == "all classes" else classes.index(which), order)
    pages = max(1, -(-len(queue) // size))
    if ss.get("page_input", 1) > pages:
        ss.page_input = pages
    page = int(c4.number_input("Page", 1, pages, key="page_input")) - 1
    shown = queue[page * size : (page + 1) * size]
    est = session.batch_precision(shown)
    m1, m2, m3 = st.columns(3)
    m1.metric("Labeled", len(session.label_state().labels))
    m2.metric("Awaiting review", len(queue))
    m3.metric("Estimated precision (shown)", "–" if not shown else f"{est.value:.0%}", help=est.basis)
    b1, b2, b3, _ = st.columns([1, 1, 1, 2])
    b1.button(f"Accept all shown ({len(shown)})", type="primary", disabled=not shown, key="accept_all",
              on_click=act, args=(session.accept, shown), kwargs={"ok": f"Accepted {len(shown)} suggestions", "app": True})
    b2.button(f"Reject all shown ({len(shown)})", disabled=not shown, key="reject_all", on_click=act,
              args=(session.reject_many, [(s.image_id, s.class_id) for s in shown]),
              kwargs={"ok": f"Rejected {len(shown)} suggestions", "app": True})
    b3.button("Undo last action", key="undo", on_click=act, args=(session.undo,), help="Undo the newest click or batch",
              kwargs={"ok": lambda r: f"Undid {len(r)} decision(s)" if r else "Nothing to undo", "app": True})
    if not queue:
        st.info("No suggestions waiting. Run a round in the **Train** tab to get the next batch.")
        return
    inspect_panel(session, {s.image_id: s for s in shown})
    cols = st.columns(6)
    for n, s in enumerate(shown):
        with cols[n % 6].container(border=True):
            thumb(session, s.image_id)
            st.markdown(f"**{classes[s.class_id]}** · {s.confidence:.2f}")
            with st.container(horizontal=True, gap="small"):
                st.button("", icon=":material/check:", key=f"acc_{s.image_id}", help="Accept", on_click=act,
                          args=(session.accept, [s]))
                st.button("", icon=":material/close:", key=f"rej_{s.image_id}", help="Reject", on_click=act,
                          args=(session.reject, s.image_id, s.class_id))
                st.button("", icon=":material/search:", key=f"ev_{s.image_id}",
                          help="Evidence (nearest labeled images) and another class",
                          on_click=lambda i=s.image_id: ss.update(evidence_for=i))


def relabel(session: LabelingSession, s: Any) -> None:
    choice = ss.get(f"fix_{s.image_id}")
    if choice is not None:
        ss.evidence_for = None
        act(session.reject, s.image_id, s.class_id, session.classes.index(choice), ok=f"Image {s.image_id} → {choice}")


def inspect_panel(session: LabelingSession, shown: dict[int, Any]) -> None:
    """One suggestion up close: its evidence, and a class to assign instead."""
    s = shown.get(ss.evidence_for) if ss.evidence_for is not None else None
    if s is None:
        return
    classes = session.classes
    with st.container(border=True):
        head, fix, close = st.columns([4, 2, 1])
        head.markdown(f"**Evidence for image {s.image_id}** → suggested **{classes[s.class_id]}** "
                      f"({s.confidence:.2f}, {s.source}): its nearest labeled images of that class")
        fix.selectbox("Assign another class", [c for c in classes if c != classes[s.class_id]], index=None,
                      key=f"fix_{s.image_id}", placeholder="choose a class…", on_change=relabel, args=(session, s))
        close.button("Close", key="ev_close", on_click=lambda: ss.update(evidence_for=None))
        cols = st.columns(max(6, len(s.evidence) + 1))
        with cols[0]:
            thumb(session, s.image_id, "suggested")
        for col, i in zip(cols[1:], s.evidence, strict=False):
            with col:
                thumb(session, i, f"#{i}")


# ---------------------------------------------------------------------------- Train
def train_page(session: LabelingSession, tcfg: TrainConfig | None, scfg: SuggestConfig | None) -> None:
    show_flash()
    st.markdown("A round trains the embedding on every label so far, embeds all images and proposes the next batch.")
    if st.button("Run a round", type="primary", disabled=tcfg is None or scfg is None, key="run_round"):
        run_round(session, tcfg, scfg)
    fig = session.rounds_figure()
    if fig is None:
        st.info("No rounds yet.")
        return
    st.plotly_chart(fig, key="rounds_chart")
    with st.expander("Round table"):
        st.dataframe(session.rounds_table(), hide_index=True)


def run_round(session: LabelingSession, tcfg: Any, scfg: Any) -> None:
    bar = st.progress(0.0, text="Training…")
    chart = st.empty()
    losses: list[float] = []
    last = [0.0]

    def progress(step: int, total: int, loss: float) -> None:
        losses.append(loss)
        bar.progress(min(1.0, step / max(total, 1)), text=f"Training: step {step}/{total} · loss {loss:.4f}")
        if time.monotonic() - last[0] > 0.5 or step >= total:
            chart.line_chart({"loss": losses}, height=200)
            last[0] = time.monotonic()

    metrics = guard(session.train_round, tcfg, progress=progress, continue_training=bool(ss.get("continue", True)))
    if metrics is None:
        return
    bar.progress(1.0, text="Proposing suggestions…")
    rows = guard(session.propose, scfg)
    if rows is None:
        return
    if ss.umap_auto:
        session.projection(start_umap=True)  # computed in the background, off the interactive path
    ss.page_input, ss.evidence_for = 1, None
    bump()
    ss.flash = ("success", f"Round {metrics['round']}: {metrics['steps']} steps in {metrics['train_seconds']:.1f} s, "
                           f"final loss {metrics['final_loss']:.4f}; {len(rows)} suggestions to review")
    st.rerun()


# ---------------------------------------------------------------------------- Explore and Dataset
@st.fragment
def explore_page(session: LabelingSession) -> None:
    c1, c2 = st.columns([3, 1])
    color = c1.segmented_control("Colour by", ["label", "source", "confidence"], default="label", key="color_by")
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
    points = (event.get("selection") or {}).get("points") if event else None
    if points:
        image_id = int(points[0]["customdata"][0])
        info = guard(session.image_info, image_id)
        if info:
            a, b = st.columns([1, 3])
            with a:
                thumb(session, image_id)
            b.markdown(f"**image {image_id}** · `{info['relpath']}`  \nlabel: **{info['label'] or 'unlabeled'}** "
                       f"({info['source'] or '–'})" + (f"  \nsuggested: **{info['suggested']}** "
                                                       f"({info['confidence']:.2f})" if info["suggested"] else ""))


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
    c1, c2, c3 = st.columns(3)
    space = c1.radio("Neighbours in", ["embedding", "backbone"], horizontal=True, key="dispute_space",
                     help="the learned embedding, or the pretrained backbone features (never trained on the labels)")
    k = c2.slider("Neighbours that vote", 3, 15, 5, key="dispute_k")
    share = c3.slider("Share of votes against the label", 0.5, 1.0, 0.6, 0.05, key="dispute_share")
    disputed = guard(session.disputed_labels, k=k, min_share=share, space=space)
    if disputed is None:
        return
    if not disputed:
        st.success("The embedding agrees with every label.")
        return
    st.caption(f"{len(disputed)} labeled image(s) whose nearest labeled neighbours vote for another class "
               "(first 24, most contested first).")
    classes = session.classes
    cols = st.columns(6)
    for n, d in enumerate(disputed[:24]):
        with cols[n % 6].container(border=True):
            thumb(session, d.image_id)
            st.markdown(f"**{classes[d.label]}** · neighbours: {classes[d.voted]} ({d.share:.0%})")
            st.button(f"→ {classes[d.voted]}", key=f"dfix_{d.image_id}", on_click=act,
                      args=(session.assign, d.image_id, classes[d.voted]), kwargs={"ok": f"Image {d.image_id} relabeled"})
            st.button("Unlabel", key=f"dun_{d.image_id}", on_click=act, args=(session.unlabel, d.image_id),
                      kwargs={"ok": f"Image {d.image_id} unlabeled"})


# ---------------------------------------------------------------------------- Export
def export_page(session: LabelingSession) -> None:
    if not ss.get("export_dir"):
        ss.export_dir = str(session.default_export_dir())
    out = st.text_input("Export folder", key="export_dir",
                        help="dataset/ (one folder per class + manifest) and model/ are written here, atomically")
    c1, c2, c3, c4, c5 = st.columns(5)
    dataset = c1.checkbox("Dataset", True, key="ex_dataset")
    model = c2.checkbox("Model", True, key="ex_model")
    pseudo = c3.checkbox("Include unreviewed labels", True, key="ex_pseudo")
    link = c4.checkbox("Hard links", False, key="ex_link", help="link instead of copying where possible")
    overwrite = c5.checkbox("Overwrite", False, key="ex_overwrite")
    if st.button("Export", type="primary", key="export"):
        with st.spinner("Exporting…"):
            done = guard(session.export, out, dataset=dataset, model=model, include_pseudo=pseudo, link=link,
                         overwrite=overwrite)
        if done is not None:
            ss.last_export = str(done)
            st.success(f"Exported to {done}")
    if ss.last_export:
        summary = guard(session.export_summary, ss.last_export)
        if summary:
            st.markdown(f"`{summary['path']}`: {summary['images']} images in {len(summary['per_class'])} class "
                        f"folders; model files: {', '.join(summary['model_files']) or 'none'}")
            if summary["manifest_csv"] is not None:
                st.download_button("Download manifest.csv", summary["manifest_csv"], file_name="manifest.csv",
                                   mime="text/csv", key="manifest_download", on_click="ignore")


# ---------------------------------------------------------------------------- page
def main() -> None:
    st.set_page_config(page_title="labeltool", layout="wide")
    init_state()
    with st.sidebar:
        st.title("labeltool")
        session = guard(open_session, ss.folder, ss.project_dir, ss.image_size)
        sidebar_project(session)
        if session is None:
            return
        with st.expander("Training", expanded=True):
            tcfg = sidebar_training(session)
        with st.expander("Suggestions", expanded=False):
            scfg = sidebar_suggest(session, session.loss_catalog()[ss.loss].has_classifier)
    missing = session.missing_features() if ss.get("embed_checked") != ss.folder else 0
    ss.embed_checked = ss.folder
    if missing:
        bar = st.progress(0.0, text=f"Embedding {missing} images…")
        done = guard(session.embed, lambda d, t: bar.progress(min(1.0, d / max(t, 1)), text=f"Embedding images {d}/{t}"),
                     rescan=False)
        if done is None:
            return
        bump()
        st.rerun()
    tabs = st.tabs(TABS, key="tab", on_change="rerun")
    pages: list[Callable[[], None]] = [
        lambda: review_page(session), lambda: train_page(session, tcfg, scfg), lambda: explore_page(session),
        lambda: dataset_page(session), lambda: export_page(session),
    ]
    for tab, page in zip(tabs, pages, strict=True):
        with tab:
            if tab.open:
                page()


main()

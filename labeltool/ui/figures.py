"""2-D projections of an embedding and the app's plotly figures (no streamlit here).

The UMAP layout (:func:`labeltool.ui.projection.umap_2d`: a sample laid out, the rest placed,
started from the previous round's layout) runs once per round in a background process
(:mod:`labeltool.ui.projection_jobs`), stopped when the next round starts, and is cached on disk
under the project's ``cache/``; until it is ready a PCA projection (milliseconds) stands in. Figures use WebGL (``scattergl``) and draw a
deterministic sample when the pool is large.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labeltool.ui.projection import pca_2d
from labeltool.ui.projection import umap_2d as umap_2d  # the app's UMAP, where benchmarks look for it
from labeltool.ui.projection_jobs import (
    UMAP_JOBS,
    load_projection,
    previous_layout,
    projection_path,
    save_projection,
)

MAX_POINTS = 20000  # points drawn in the scatter; the rest are sampled away
GREY = "#c8c8c8"
# class colours: saturated hues only, no grey, so none can be taken for the unlabeled points
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#004d40", "#bcbd22", "#17becf",
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#f0027f",
)
SOURCE_COLORS = {"seed": "#1f77b4", "reviewed": "#2ca02c", "pseudo": "#9467bd", "suggested": "#ff7f0e",
                 "unlabeled": GREY}
UNLABELED_MARKER = {"color": GREY, "symbol": "circle-open", "opacity": 0.7, "size": 5}  # hollow: no class looks so
COMPACTNESS_HELP = (
    "Angles in radians between directions of the embedding. **C-Inter**: mean angle between the class centres "
    "(the mean embedding of each class); larger = classes further apart. **W-Inter**: mean angle between the "
    "classifier's class weight vectors; larger = better separated. **WC-Intra**: mean angle between each class "
    "centre and its own weight vector; smaller = tighter classes. W-Inter and WC-Intra need a loss with a "
    "classifier head."
)


@dataclass(frozen=True)
class Projection:
    """2-D coordinates ``xy [N, 2]`` of the images ``ids [N]``; ``method`` is ``umap`` or ``pca``."""

    ids: np.ndarray
    xy: np.ndarray
    method: str
    note: str


# ---------------------------------------------------------------------------- projections
def projection(cache_dir: Path, key: str, ids: np.ndarray, x: np.ndarray | Callable[[], np.ndarray], *,
               start_umap: bool = True, seed: int = 0) -> Projection:
    """The cached UMAP of the embedding ``key`` when ready; otherwise PCA, starting the UMAP in
    the background when ``start_umap`` (from the newest other cached UMAP, so the picture stays
    put between rounds). ``x`` may be a function returning the embedding, called only when
    something has to be computed."""
    ids = np.asarray(ids, dtype=np.int64)
    loaded: list[np.ndarray] = []

    def data() -> np.ndarray:
        if not loaded:
            loaded.append(np.asarray(x() if callable(x) else x, dtype=np.float32))
        return loaded[0]

    upath = projection_path(cache_dir, key, "umap")
    xy = load_projection(upath, ids)
    if xy is not None:
        return Projection(ids, xy, "umap", "UMAP (cached)")
    status = UMAP_JOBS.status(upath)
    if start_umap and status is None and len(ids) >= 5:
        UMAP_JOBS.start(upath, ids, data(), seed, init=previous_layout(cache_dir, key, ids))
        status = "running"
    ppath = projection_path(cache_dir, key, "pca")
    pxy = load_projection(ppath, ids)
    if pxy is None:
        pxy = pca_2d(data())
        save_projection(ppath, ids, pxy)
    if status == "running":
        note = "PCA shown while UMAP is computed in the background; refresh in a moment"
    elif status:
        note = f"PCA shown: UMAP {status}"
    else:
        note = "PCA (UMAP not computed yet)"
    return Projection(ids, pxy, "pca", note)


# ---------------------------------------------------------------------------- figures
def sample_frame(df: pd.DataFrame, max_points: int = MAX_POINTS, *, keep: str = "labeled", seed: int = 0) -> pd.DataFrame:
    """At most ``max_points`` rows: every row where ``keep`` is true first, then a seeded sample."""
    if len(df) <= max_points:
        return df
    must = df[df[keep]] if keep in df else df.iloc[:0]
    if len(must) >= max_points:
        return must.sample(n=max_points, random_state=seed)
    rest = df.drop(index=must.index)
    return pd.concat([must, rest.sample(n=max_points - len(must), random_state=seed)])


def _color_for(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def scatter_figure(df: pd.DataFrame, color_by: str = "label", *, max_points: int = MAX_POINTS,
                   title: str = "") -> go.Figure:
    """WebGL scatter of ``df`` (columns image_id, x, y, label, source, confidence, labeled).

    ``customdata`` holds the image id, so a selected point names its image."""
    shown = sample_frame(df, max_points)
    fig = go.Figure()
    hover = "image %{customdata[0]}<br>%{customdata[1]}<br>%{customdata[2]}<extra></extra>"

    def add(part: pd.DataFrame, name: str, **marker: Any) -> None:
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=name,
            customdata=np.stack([part["image_id"], part["label"], part["source"]], axis=1),
            hovertemplate=hover, marker={"size": 6, "opacity": 0.85, **marker},
        ))

    if color_by == "confidence":
        conf = shown["confidence"]
        none = shown[conf.isna()]
        if len(none):
            add(none, "no confidence", color=GREY)
        part = shown[conf.notna()]
        add(part, "confidence", color=part["confidence"], colorscale="Viridis", cmin=0, cmax=1,
            colorbar={"title": "conf."}, showscale=True)
    elif color_by == "source":
        for name, color in SOURCE_COLORS.items():
            part = shown[shown["source"] == name]
            if len(part):
                add(part, name, color=color)
    else:
        names = sorted(n for n in shown["label"].unique() if n != "unlabeled")
        part = shown[shown["label"] == "unlabeled"]
        if len(part):
            add(part, "unlabeled", **UNLABELED_MARKER)
        for i, name in enumerate(names):
            add(shown[shown["label"] == name], str(name), color=_color_for(i))
    sub = f" — showing {len(shown):,} of {len(df):,} points" if len(shown) < len(df) else ""
    fig.update_layout(
        title=(title + sub) or None, height=560, margin={"l": 10, "r": 10, "t": 40 if title or sub else 10, "b": 10},
        legend={"itemsizing": "constant"}, xaxis={"visible": False}, yaxis={"visible": False},
        dragmode="pan", clickmode="event+select",
    )
    return fig


ROUND_COLUMNS = ("round", "n_labeled", "stated_precision", "acceptance_rate", "held_out_accuracy", "loo_1nn_accuracy",
                 "c_inter", "w_inter", "wc_intra", "final_loss", "train_seconds")


def rounds_frame(rounds: Sequence[Any]) -> pd.DataFrame:
    """One row per round (objects with ``id`` and ``metrics``), the columns of :data:`ROUND_COLUMNS`."""
    rows = []
    for r in rounds:
        m: Mapping[str, Any] = r.metrics or {}
        if "n_labeled" not in m:  # a round that never finished training
            continue
        review = m.get("review") or {}
        proposal = m.get("proposal") or {}
        rows.append({
            "round": int(r.id), "n_labeled": m.get("n_labeled"), "acceptance_rate": review.get("acceptance_rate"),
            "stated_precision": (proposal.get("batch_precision") or {}).get("value"),
            "held_out_accuracy": proposal.get("held_out_accuracy"),
            "loo_1nn_accuracy": m.get("loo_1nn_accuracy"), "c_inter": m.get("c_inter"), "w_inter": m.get("w_inter"),
            "wc_intra": m.get("wc_intra"), "final_loss": m.get("final_loss"), "train_seconds": m.get("train_seconds"),
        })
    return pd.DataFrame(rows, columns=list(ROUND_COLUMNS)).astype(
        {c: "float64" for c in ROUND_COLUMNS if c != "round"}
    )


def rounds_figure(df: pd.DataFrame) -> go.Figure:
    """Four panels over rounds: labeled count; each batch's stated precision beside the reviewer's
    acceptance rate; held-out accuracy on verified labels; compactness angles.

    No leave-one-out accuracy in the trained embedding: that space was trained on the labels it
    would be checked against, so it reads 1.0 however many of them are wrong."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=(
        "labeled images", "stated precision vs acceptance by the reviewer",
        "held-out accuracy on verified labels", "compactness (radians)",
    ), vertical_spacing=0.2)
    x = df["round"]

    def line(col: str, row: int, c: int, name: str, color: str) -> None:
        fig.add_trace(go.Scatter(x=x, y=df[col], mode="lines+markers", name=name, line={"color": color},
                                 connectgaps=True), row=row, col=c)

    line("n_labeled", 1, 1, "labeled", _PALETTE[0])
    line("stated_precision", 1, 2, "stated precision of the batch", _PALETTE[3])
    line("acceptance_rate", 1, 2, "accepted by the reviewer", _PALETTE[2])
    line("held_out_accuracy", 2, 1, "held-out accuracy (verified labels)", _PALETTE[6 % len(_PALETTE)])
    line("c_inter", 2, 2, "C-Inter (class centres apart)", _PALETTE[4])
    line("w_inter", 2, 2, "W-Inter (class weights apart)", _PALETTE[1])
    line("wc_intra", 2, 2, "WC-Intra (centre to own weight)", _PALETTE[5])
    fig.update_xaxes(dtick=1)
    fig.update_xaxes(title_text="round", row=2)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    fig.update_yaxes(range=[0, 1.05], row=2, col=1)
    fig.update_layout(height=560, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.14})
    return fig


def loss_figure(losses: Sequence[float]) -> go.Figure:
    """The loss of each step so far; the y ticks carry 3 significant digits (an exponent when small)."""
    fig = go.Figure(go.Scatter(x=np.arange(1, len(losses) + 1), y=np.asarray(losses, dtype=np.float64),
                               mode="lines", name="loss", line={"color": _PALETTE[0]}))
    fig.update_layout(height=220, margin={"l": 10, "r": 10, "t": 10, "b": 10}, showlegend=False,
                      xaxis={"title": "step"}, yaxis={"title": "loss", "tickformat": ".3~g", "exponentformat": "e"})
    return fig


def class_counts_figure(per_class: Mapping[str, int], pending: Mapping[str, int] | None = None) -> go.Figure:
    """Bar chart of labeled images per class (and suggestions awaiting review, stacked)."""
    names = list(per_class)
    fig = go.Figure(go.Bar(x=names, y=[per_class[n] for n in names], name="labeled", marker_color=_PALETTE[0]))
    if pending:
        fig.add_trace(go.Bar(x=names, y=[pending.get(n, 0) for n in names], name="awaiting review",
                             marker_color=SOURCE_COLORS["suggested"]))
    fig.update_layout(barmode="stack", height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h"})
    return fig

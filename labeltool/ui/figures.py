"""2-D projections of an embedding and the app's plotly figures (no streamlit here).

UMAP (umap-learn, imported on first use) is slow the first time (numba compiles), so it runs
once per round in a background process (stopped when the next round starts) and is cached on disk under the project's ``cache/``;
until it is ready a PCA projection (milliseconds) stands in. Figures use WebGL (``scattergl``)
and draw a deterministic sample when the pool is large.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

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
def pca_2d(x: np.ndarray) -> np.ndarray:
    """First two principal components of ``x [N, D]`` (zeros where there is nothing to project)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        return np.zeros((x.shape[0] if x.ndim else 0, 2), dtype=np.float32)
    x = x - x.mean(axis=0)
    cov = x.T @ x
    vals, vecs = np.linalg.eigh(cov)
    top = vecs[:, ::-1][:, :2]
    if top.shape[1] < 2:
        top = np.pad(top, ((0, 0), (0, 2 - top.shape[1])))
    # fix the sign so the picture does not flip between runs
    signs = np.sign(top[np.abs(top).argmax(axis=0), [0, 1]])
    return (x @ (top * np.where(signs == 0, 1, signs))).astype(np.float32)


def umap_2d(x: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """UMAP of ``x [N, D]`` to 2-D (deterministic for a seed)."""
    try:
        import umap
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "the UMAP view needs the umap-learn package: pip install umap-learn (PCA is shown meanwhile)"
        ) from e
    n = x.shape[0]
    if n < 5:
        return pca_2d(x)
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist, random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(np.asarray(x, dtype=np.float32)), dtype=np.float32)


def projection_path(cache_dir: Path, key: str, method: str) -> Path:
    """Where the projection ``method`` of the embedding ``key`` is cached."""
    return Path(cache_dir) / "projections" / f"{key}-{method}.npz"


def save_projection(path: Path, ids: np.ndarray, xy: np.ndarray) -> None:
    """Write atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as fh:
        np.savez(fh, ids=np.asarray(ids, dtype=np.int64), xy=np.asarray(xy, dtype=np.float32))
    os.replace(tmp, path)


def load_projection(path: Path, ids: np.ndarray) -> np.ndarray | None:
    """Cached coordinates for exactly ``ids`` (same order), or None when missing or stale."""
    try:
        with np.load(path) as data:
            cached_ids, xy = data["ids"], data["xy"]
    except (OSError, KeyError, ValueError):
        return None
    if cached_ids.shape != np.shape(ids) or not np.array_equal(cached_ids, ids):
        return None
    return xy


def _error_path(path: Path) -> Path:
    return path.with_name(path.name + ".error.txt")


def _input_path(path: Path) -> Path:
    return path.with_name(path.name + ".input.npz")


def _projection_job(path: str, seed: int, nice: int, compute: Callable[..., np.ndarray]) -> None:
    """Body of a background projection process: one thread, lower priority, ``compute(x, seed=)``
    ``[N, 2]`` (or its error) to disk. Its input ``ids``, ``x`` waits in :func:`_input_path`: handed
    over through the process's pipe, a large array would hold the parent until the child had
    imported everything and started reading (seconds, in the middle of the app's round)."""
    os.environ["NUMBA_NUM_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    with contextlib.suppress(OSError, AttributeError):
        os.nice(nice)
    source = _input_path(Path(path))
    try:
        with np.load(source) as data:
            ids, x = data["ids"], data["x"]
        save_projection(Path(path), ids, compute(x, seed=seed))
    except Exception as e:  # noqa: BLE001 - reported through status(), the view falls back to PCA
        _error_path(Path(path)).write_text(f"failed: {e}", encoding="utf-8")
    finally:
        source.unlink(missing_ok=True)


class _Jobs:
    """Background UMAP computations, one per cache file.

    Each runs in its own process (spawned, one thread, ``nice`` 10), so a training round never
    competes with it for the interpreter, and :meth:`cancel_all` stops them when a round starts:
    the projection of the previous round is stale by then anyway.
    """

    def __init__(self, nice: int = 10, compute: Callable[..., np.ndarray] = umap_2d) -> None:
        self.lock = threading.Lock()
        self.running: dict[Path, BaseProcess] = {}
        self.nice, self.compute = nice, compute

    def status(self, path: Path) -> str | None:
        """``"running"``, an error text, or None (never started, cancelled, or done)."""
        with self.lock:
            proc = self.running.get(path)
            if proc is not None and proc.is_alive():
                return "running"
        err = _error_path(path)
        return err.read_text(encoding="utf-8") if err.is_file() else None

    def start(self, path: Path, ids: np.ndarray, x: np.ndarray, seed: int) -> bool:
        """Start the UMAP of ``x`` ``[N, D]`` into ``path``; False when one is already running there."""
        with self.lock:
            proc = self.running.get(path)
            if proc is not None and proc.is_alive():
                return False
            _error_path(path).unlink(missing_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(_input_path(path), "wb") as fh:
                np.savez(fh, ids=np.asarray(ids, dtype=np.int64), x=np.asarray(x, dtype=np.float32))
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=_projection_job, args=(str(path), seed, self.nice, self.compute),
                               name="labeltool-umap", daemon=True)
            proc.start()
            self.running[path] = proc
            return True

    def wait(self, path: Path, timeout: float | None = None) -> None:
        """Block until the job writing ``path`` ends (or ``timeout`` seconds pass)."""
        with self.lock:
            proc = self.running.get(path)
        if proc is not None:
            proc.join(timeout)

    def cancel_all(self) -> int:
        """Stop every running job (their files are not written); returns how many were stopped."""
        with self.lock:
            alive = [(path, p) for path, p in self.running.items() if p.is_alive()]
            self.running.clear()
        for _, proc in alive:
            proc.terminate()
        for path, proc in alive:
            proc.join(5)
            for tmp in path.parent.glob(path.name + ".tmp-*"):  # a write the stop cut short
                tmp.unlink(missing_ok=True)
            _input_path(path).unlink(missing_ok=True)
        return len(alive)


UMAP_JOBS = _Jobs()


def projection(cache_dir: Path, key: str, ids: np.ndarray, x: np.ndarray | Callable[[], np.ndarray], *,
               start_umap: bool = True, seed: int = 0) -> Projection:
    """The cached UMAP of the embedding ``key`` when ready; otherwise PCA, starting the UMAP in
    the background when ``start_umap``. ``x`` may be a function returning the embedding, called
    only when something has to be computed."""
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
        UMAP_JOBS.start(upath, ids, data(), seed)
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

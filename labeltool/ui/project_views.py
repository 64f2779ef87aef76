"""Project-level helpers for the app: where a project lives, a store usable from every thread of
the web server, the settings catalogue (losses, suggestion sources), the data behind the
Explore page and export defaults."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labeltool.config import SOURCES, TRAIN_MODES
from labeltool.data.project import CONFIG_FILE, PROJECT_DIRNAME
from labeltool.data.store import Store
from labeltool.losses import HyperParam, get_loss_class, list_losses
from labeltool.suggest.propose import KNN_CONFIDENCES, Suggestion
from labeltool.ui import figures as viz
from labeltool.ui.figures import Projection, projection
from labeltool.ui.queue import PrecisionEstimate, class_counts, disputed_labels, reviewed_outcomes
from labeltool.ui.queue import batch_precision as estimate_precision

if TYPE_CHECKING:
    from labeltool.rounds.head_round import RoundEmbedding
    from labeltool.session import LabelingSession


# ---------------------------------------------------------------------------- where projects live
def user_cache_root() -> Path:
    """``$LABELTOOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/labeltool``, else ``~/.cache/labeltool``."""
    env = os.environ.get("LABELTOOL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "labeltool"


def resolve_project_dir(folder: str | Path, project_dir: str | Path | None = None,
                        protected: Iterable[str | Path] = ()) -> Path | None:
    """The project directory the app uses for ``folder``.

    An explicit ``project_dir`` wins; a folder that already holds a project keeps it (None = the
    default ``<folder>/.labeltool``). A folder inside one of ``protected`` (e.g. the sample data of
    a source checkout) or a read-only folder gets a per-user directory
    ``<cache>/projects/<name>-<hash of the path>`` instead, so the app never writes into it.
    """
    if project_dir:
        return Path(project_dir).expanduser()
    root = Path(folder).expanduser().resolve()
    if (root / PROJECT_DIRNAME / CONFIG_FILE).exists():
        return None
    inside = any(root == Path(p).resolve() or Path(p).resolve() in root.parents for p in protected)
    if inside or (root.is_dir() and not os.access(root, os.W_OK)):
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", root.name)[:40] or "folder"
        return user_cache_root() / "projects" / f"{name}-{digest}"
    return None


class ThreadLocalStore:
    """A :class:`Store` per thread on the same database.

    A web server answers each page run on its own thread, and an SQLite connection may only be
    used by the thread that made it; this proxy opens one connection per thread and forwards
    every attribute to it. Writes stay durable and serialised by SQLite itself.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()

    def _store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.path)
            self._local.store = store
        return store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store(), name)

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        store = getattr(self._local, "store", None)
        if store is not None:
            store.close()
            self._local.store = None


# ---------------------------------------------------------------------------- settings catalogue
@dataclass(frozen=True)
class LossInfo:
    """What the sidebar needs to render a loss's controls."""

    name: str
    hyperparams: tuple[HyperParam, ...]
    uses_unlabeled: bool
    has_classifier: bool
    doc: str


def loss_catalog() -> dict[str, LossInfo]:
    """Every registered loss, by name."""
    out = {}
    for name in list_losses():
        cls = get_loss_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        out[name] = LossInfo(name, tuple(cls.hyperparams), bool(cls.uses_unlabeled), bool(cls.has_classifier),
                             doc[0] if doc else "")
    return out


def setting_choices() -> dict[str, tuple[str, ...]]:
    """Valid values of the settings that are choices: suggestion source, kNN confidence, training mode."""
    return {"source": tuple(SOURCES), "confidence": tuple(KNN_CONFIDENCES), "train_mode": tuple(TRAIN_MODES)}


# ---------------------------------------------------------------------------- Review and Dataset
def batch_precision(session: LabelingSession, suggestions: Sequence[Suggestion]) -> PrecisionEstimate:
    """Estimated precision of ``suggestions``, calibrated on the reviews recorded so far."""
    log = session.store.decisions()
    rounds = {d.round for d in log if d.round is not None}
    conf, acc = reviewed_outcomes(log, {r: session.store.suggestions(r) for r in rounds})
    return estimate_precision([s.confidence for s in suggestions], conf, acc)


def disputed(session: LabelingSession, k: int, min_share: float, space: str) -> list[Any]:
    """Disputed labels in the newest round's embedding (``space="embedding"``; the backbone
    features before any round) or in the backbone features (``space="backbone"``)."""
    if space not in ("embedding", "backbone"):
        raise ValueError(f"space must be 'embedding' or 'backbone', got {space!r}")
    cur = round_embedding(session) if space == "embedding" else None
    if cur is not None:
        ids, emb = cur.ids, cur.embeddings
    else:
        pool = session.pool()
        ids, emb = pool.ids, np.asarray(pool.features, dtype=np.float32)
    labels = session.label_state().labels
    y = np.fromiter((labels.get(int(i), -1) for i in ids), dtype=np.int64, count=len(ids))
    return disputed_labels(ids, emb, y, k=k, min_share=min_share)


def class_counts_figure(session: LabelingSession) -> Any:
    """Bar chart of labeled images per class with the pending suggestions stacked."""
    per_class = session.stats()["per_class"]
    return viz.class_counts_figure(per_class, class_counts(session.pending_suggestions(), session.classes))


def rounds_figure(session: LabelingSession) -> Any:
    """Round history chart, or None before the first finished round."""
    df = viz.rounds_frame(session.store.rounds())
    return viz.rounds_figure(df) if len(df) else None


# ---------------------------------------------------------------------------- embeddings and Explore
def missing_features(session: LabelingSession) -> int:
    """Usable images that have no cached backbone features yet."""
    cache = session.feature_cache()
    cache.refresh()
    return sum(1 for r in session.store.images() if r.status == "ok" and r.sha256 and r.sha256 not in cache)


def round_embedding(session: LabelingSession) -> RoundEmbedding | None:
    """The newest round's embedding of the pool, or None before the first round."""
    try:
        return session.current_round()
    except RuntimeError:
        return None


def current_projection(session: LabelingSession, *, start_umap: bool = True) -> Projection:
    """2-D view of the newest round's embedding (of the backbone features before any round)."""
    cur = round_embedding(session)
    if cur is not None:
        return projection(session.project.cache_dir, f"round-{cur.round}", cur.ids, cur.embeddings,
                          start_umap=start_umap)
    pool = session.pool()
    if len(pool) == 0:
        return Projection(np.zeros(0, np.int64), np.zeros((0, 2), np.float32), "pca", "nothing embedded yet")
    key = f"features-{session.backbone_spec.cache_key()}"
    return projection(session.project.cache_dir, key, pool.ids, lambda: np.asarray(pool.features, dtype=np.float32),
                      start_umap=start_umap)


def explore_frame(session: LabelingSession, proj: Projection) -> pd.DataFrame:
    """One row per projected image: image_id, x, y, label, source, confidence, labeled."""
    state = session.label_state()
    classes = session.classes
    pending = {s.image_id: s for s in session.pending_suggestions()}
    cur = round_embedding(session)
    probs: dict[int, float] = {}
    if cur is not None and cur.probs is not None:
        top = cur.probs.max(axis=1)
        probs = {int(i): float(p) for i, p in zip(cur.ids, top, strict=True)}
    rows = []
    for image_id, (x, y) in zip(proj.ids.tolist(), proj.xy.tolist(), strict=True):
        c = state.labels.get(image_id)
        s = pending.get(image_id)
        if c is not None:
            label, source = classes[c], state.source.get(image_id, "seed")
        elif s is not None:
            label, source = "unlabeled", "suggested"
        else:
            label, source = "unlabeled", "unlabeled"
        conf = s.confidence if s is not None else probs.get(image_id, np.nan)
        rows.append((image_id, x, y, label, source, conf, c is not None))
    return pd.DataFrame(rows, columns=["image_id", "x", "y", "label", "source", "confidence", "labeled"])


def explore_figure(session: LabelingSession, proj: Projection, color_by: str) -> Any:
    """The Explore scatter of a projection."""
    return viz.scatter_figure(explore_frame(session, proj), color_by, title=proj.method.upper())


def image_info(session: LabelingSession, image_id: int) -> dict[str, Any]:
    """Path, current label and its source, and the pending suggestion of one image."""
    row = session.store.image(image_id)
    if row is None:
        raise KeyError(f"unknown image id {image_id}")
    state = session.label_state()
    c = state.labels.get(image_id)
    sugg = next((s for s in session.pending_suggestions() if s.image_id == image_id), None)
    return {
        "image_id": image_id, "relpath": row.relpath, "status": row.status,
        "label": session.classes[c] if c is not None else None, "source": state.source.get(image_id),
        "suggested": session.classes[sugg.class_id] if sugg else None,
        "confidence": sugg.confidence if sugg else None,
    }


# ---------------------------------------------------------------------------- export
def default_export_dir(session: LabelingSession, base: str | Path | None = None) -> Path:
    """``<base or ./models>/<folder name>-round<N>`` (a new name when that exists already)."""
    base_dir = Path(base) if base else Path.cwd() / "models"
    rounds = session.store.rounds()
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", session.project.image_root.name) or "labeltool"
    name = f"{stem}-round{rounds[-1].id}" if rounds else stem
    out, n = base_dir / name, 1
    while out.exists():
        n += 1
        out = base_dir / f"{name}-{n}"
    return out


def export_summary(out: str | Path) -> dict[str, Any]:
    """Files of an export: counts per class folder, the model files and the manifest's bytes."""
    out = Path(out)
    ds, model = out / "dataset", out / "model"
    per_class = {p.name: sum(1 for f in p.iterdir() if f.is_file()) for p in sorted(ds.iterdir()) if p.is_dir()} \
        if ds.is_dir() else {}
    manifest = ds / "manifest.csv"
    return {
        "path": str(out), "per_class": per_class, "images": sum(per_class.values()),
        "model_files": sorted(f.name for f in model.iterdir()) if model.is_dir() else [],
        "manifest_csv": manifest.read_bytes() if manifest.exists() else None,
    }

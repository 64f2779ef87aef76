"""The data behind the app's Review, Dataset and Explore pages and its export defaults, as pure
functions of the project's rows, labels and arrays (gathered by
:class:`labeltool.session.views.SessionViews`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from labeltool.data.decisions import LabelState
from labeltool.data.store import ImageRow
from labeltool.suggest.propose import Suggestion
from labeltool.ui import figures as viz
from labeltool.ui.figures import Projection, projection
from labeltool.ui.pages import DISPUTE_SPACES
from labeltool.ui.queue import Disputed, class_counts, disputed_labels


class Embedded(Protocol):
    """Rows embedded by a round: ``ids [N]``, ``embeddings [N, D]``, ``probs [N, C]`` or None."""

    @property
    def round(self) -> int: ...
    @property
    def ids(self) -> np.ndarray: ...
    @property
    def embeddings(self) -> np.ndarray: ...
    @property
    def probs(self) -> np.ndarray | None: ...


class Features(Protocol):
    """Backbone features of the pool: ``ids [N]`` and ``features [N, F]`` (array-like)."""

    @property
    def ids(self) -> np.ndarray: ...
    @property
    def features(self) -> Any: ...
    def __len__(self) -> int: ...


# ---------------------------------------------------------------------------- Review and Dataset
def dispute_arrays(space: str, current: Embedded | None, pool: Features) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [N], vectors [N, D])`` to look for disputed labels in: the newest round's embedding
    (``space="embedding"``; the backbone features before any round) or the backbone features."""
    if space not in DISPUTE_SPACES:
        raise ValueError(f"space must be 'embedding' or 'backbone', got {space!r}")
    if space == "embedding" and current is not None:
        return current.ids, current.embeddings
    return pool.ids, np.asarray(pool.features, dtype=np.float32)


def disputed(ids: np.ndarray, vectors: np.ndarray, labels: Mapping[int, int], k: int,
             min_share: float) -> list[Disputed]:
    """Labeled rows of ``ids [N]`` / ``vectors [N, D]`` whose neighbours vote for another class."""
    y = np.fromiter((labels.get(int(i), -1) for i in ids), dtype=np.int64, count=len(ids))
    return disputed_labels(ids, vectors, y, k=k, min_share=min_share)


def class_counts_figure(per_class: Mapping[str, int], pending: Iterable[Suggestion], classes: Sequence[str]) -> Any:
    """Bar chart of labeled images per class with the pending suggestions stacked."""
    return viz.class_counts_figure(per_class, class_counts(pending, classes))


def rounds_figure(rounds: Sequence[Any]) -> Any:
    """Round history chart of the stored rounds, or None before the first finished round."""
    df = viz.rounds_frame(rounds)
    return viz.rounds_figure(df) if len(df) else None


# ---------------------------------------------------------------------------- embeddings and Explore

def current_projection(cache_dir: Path, current: Embedded | None, pool: Features, features_key: str, *,
                       start_umap: bool = True) -> Projection:
    """2-D view of the newest round's embedding (of the backbone features before any round)."""
    if current is not None:
        return projection(cache_dir, f"round-{current.round}", current.ids, current.embeddings, start_umap=start_umap)
    if len(pool) == 0:
        return Projection(np.zeros(0, np.int64), np.zeros((0, 2), np.float32), "pca", "nothing embedded yet")
    return projection(cache_dir, f"features-{features_key}", pool.ids,
                      lambda: np.asarray(pool.features, dtype=np.float32), start_umap=start_umap)


def explore_frame(proj: Projection, state: LabelState, classes: Sequence[str], pending: Iterable[Suggestion],
                  current: Embedded | None) -> pd.DataFrame:
    """One row per projected image: image_id, x, y, label, source, confidence, labeled."""
    waiting = {s.image_id: s for s in pending}
    probs: dict[int, float] = {}
    if current is not None and current.probs is not None:
        top = current.probs.max(axis=1)
        probs = {int(i): float(p) for i, p in zip(current.ids, top, strict=True)}
    rows = []
    for image_id, (x, y) in zip(proj.ids.tolist(), proj.xy.tolist(), strict=True):
        c = state.labels.get(image_id)
        s = waiting.get(image_id)
        if c is not None:
            label, source = classes[c], state.source.get(image_id, "seed")
        elif s is not None:
            label, source = "unlabeled", "suggested"
        else:
            label, source = "unlabeled", "unlabeled"
        conf = s.confidence if s is not None else probs.get(image_id, np.nan)
        rows.append((image_id, x, y, label, source, conf, c is not None))
    return pd.DataFrame(rows, columns=["image_id", "x", "y", "label", "source", "confidence", "labeled"])


def explore_figure(frame: pd.DataFrame, proj: Projection, color_by: str) -> Any:
    """The Explore scatter of a projection's :func:`explore_frame`."""
    return viz.scatter_figure(frame, color_by, title=proj.method.upper())


def image_info(image_id: int, row: ImageRow | None, state: LabelState, classes: Sequence[str],
               pending: Iterable[Suggestion]) -> dict[str, Any]:
    """Path, current label and its source, and the pending suggestion of one image."""
    if row is None:
        raise KeyError(f"unknown image id {image_id}")
    c = state.labels.get(image_id)
    sugg = next((s for s in pending if s.image_id == image_id), None)
    return {
        "image_id": image_id, "relpath": row.relpath, "status": row.status,
        "label": classes[c] if c is not None else None, "source": state.source.get(image_id),
        "suggested": classes[sugg.class_id] if sugg else None,
        "confidence": sugg.confidence if sugg else None,
    }


# ---------------------------------------------------------------------------- export
EXPORTS_FOLDER = "labeltool-exports"


def export_base(image_root: Path, avoid: Iterable[Path] = ()) -> Path:
    """Where exports go by default: ``~/labeltool-exports``, else ``labeltool-exports`` beside the
    image folder, else in the temp folder; the first that lies neither inside the image folder nor
    inside (or above) a folder of ``avoid`` (the project directory, the app's own folder)."""
    import tempfile

    root = Path(image_root).resolve()
    kept = [root, *(Path(a).resolve() for a in avoid)]
    for base in (Path.home() / EXPORTS_FOLDER, root.parent / EXPORTS_FOLDER, Path(tempfile.gettempdir()) / EXPORTS_FOLDER):
        b = base.resolve()
        if not any(b == k or k in b.parents or b in k.parents for k in kept):
            return b
    raise ValueError(f"no default export folder outside {root}: choose one")


def default_export_dir(image_root: Path, last_round: int | None, base: str | Path | None = None,
                       avoid: Iterable[Path] = ()) -> Path:
    """``<base>/<folder name>-round<N>`` (a new name when that exists already); ``base`` defaults
    to :func:`export_base`, outside the image folder and the folders of ``avoid``."""
    base_dir = Path(base) if base else export_base(image_root, avoid)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", image_root.name) or "labeltool"
    name = f"{stem}-round{last_round}" if last_round is not None else stem
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

"""``LabelingSession``: the one facade the CLI and the app use.

Open a folder, scan it, embed it, train rounds, propose suggestions, record decisions, undo,
export. Every write goes through :class:`labeltool.data.store.Store` and is durable when the method
returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labeltool.config import ProjectConfig, SuggestConfig, TrainConfig
from labeltool.data.decisions import LabelState
from labeltool.data.features import FeatureCache
from labeltool.data.pool import Pool, RowView
from labeltool.data.project import Project, open_project
from labeltool.data.scan import ScannedFile, scan_folder
from labeltool.data.store import ImageRow, Store
from labeltool.models.backbones import Backbone, create_backbone, get_spec
from labeltool.models.extract import ExtractionResult, extract_to_cache, pick_device
from labeltool.rounds import head_round as round_ops
from labeltool.session_views import SessionViews
from labeltool.suggest.propose import Suggestion
from labeltool.train.checkpoints import Checkpoint, latest_round, load_checkpoint

__all__ = ["LabelingSession", "ProjectConfig", "ScanSummary", "SuggestConfig", "TrainConfig"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ScanSummary:
    """What a scan found: counts and the files it could not use (relpath, reason)."""

    total: int
    ok: int
    errors: list[tuple[str, str]]
    ignored: list[tuple[str, str]]
    added: int
    changed: int
    removed: int
    classes: list[str]


class LabelingSession(SessionViews):
    """A project opened for labeling. Create with :meth:`open`."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.store = Store(project.db_path)
        self._backbone: Backbone | None = None
        self._cache: FeatureCache | None = None
        self._current: round_ops.RoundEmbedding | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        folder: str | Path,
        *,
        project_dir: str | Path | None = None,
        config: ProjectConfig | None = None,
        create: bool = True,
        scan: bool | None = None,
    ) -> LabelingSession:
        """Open (or create) the project of ``folder``. A new project is scanned right away;
        pass ``scan=True`` to rescan an existing one."""
        project = open_project(folder, project_dir=project_dir, config=config, create=create)
        session = cls(project)
        if scan or (scan is None and not session.store.images(only_present=False)):
            session.scan()
        return session

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> LabelingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ scan and embed
    def scan(self, progress: Progress | None = None) -> ScanSummary:
        """Rescan the image folder: picks up added, removed and changed files."""
        before = {r.relpath: r for r in self.store.images(only_present=False)}
        previous = {p: _as_scanned(r) for p, r in before.items() if r.present}
        report = scan_folder(
            self.project.image_root, exclude=[self.project.dir], max_pixels=self.project.config.max_pixels,
            previous=previous, progress=progress,
        )
        class_ids = self.store.ensure_classes(report.classes)
        rows = [
            {
                "relpath": f.relpath, "sha256": f.sha256, "size_bytes": f.size_bytes, "mtime_ns": f.mtime_ns,
                "width": f.width, "height": f.height, "status": f.status, "error": f.error,
                "seed_class_id": class_ids.get(f.seed_class) if f.seed_class and f.status == "ok" else None,
            }
            for f in report.files
        ]
        self.store.upsert_images(rows, [f.relpath for f in report.files])
        present = {f.relpath for f in report.files}
        added = sum(1 for p in present if p not in previous)
        changed = sum(1 for f in report.files if f.relpath in previous and previous[f.relpath].sha256 != f.sha256)
        removed = sum(1 for p in previous if p not in present)
        self._current = None if added or changed or removed else self._current
        return ScanSummary(
            total=len(report.files), ok=len(report.ok), errors=[(f.relpath, f.error or "") for f in report.errors],
            ignored=list(report.ignored), added=added, changed=changed, removed=removed, classes=self.classes,
        )

    @property
    def backbone_spec(self):  # noqa: ANN201 - BackboneSpec
        c = self.project.config
        return get_spec(c.backbone, image_size=c.image_size, checkpoint=c.checkpoint)

    def backbone(self, with_classifier: bool = False) -> Backbone:
        """The project's backbone (built once per session)."""
        if with_classifier:
            c = self.project.config
            return create_backbone(c.backbone, image_size=c.image_size, checkpoint=c.checkpoint, with_classifier=True)
        if self._backbone is None:
            c = self.project.config
            self._backbone = create_backbone(c.backbone, image_size=c.image_size, checkpoint=c.checkpoint)
        return self._backbone

    def feature_cache(self) -> FeatureCache:
        if self._cache is None:
            spec = self.backbone_spec
            dim = spec.feature_dim or self.backbone().spec.feature_dim
            self._cache = FeatureCache(self.project.embeddings_dir, spec.cache_key(), dim)
        return self._cache

    def embed(
        self, progress: Progress | None = None, *, device: str = "auto", rescan: bool = True,
        num_workers: int | None = None,
    ) -> ExtractionResult:
        """Compute backbone features for every usable image not yet cached."""
        if rescan:
            self.scan()
        items = [(r.sha256, self.project.image_path(r.relpath)) for r in self._usable_images() if r.sha256]
        result = extract_to_cache(
            self.backbone(), self.feature_cache(), items, batch_size=self.project.config.embed_batch_size,
            device=pick_device(device), num_workers=num_workers, progress=progress,
        )
        if result.failed:  # decoded at scan time but not now (changed on disk mid-run): rescan records why
            self.scan()
        return result

    def _usable_images(self) -> list[ImageRow]:
        return [r for r in self.store.images() if r.status == "ok"]

    def pool(self) -> Pool:
        """Usable images whose features are cached, in image-id order."""
        cache = self.feature_cache()
        cache.refresh()
        rows = [r for r in self._usable_images() if r.sha256 in cache]
        hashes = [r.sha256 or "" for r in rows]
        return Pool(
            ids=np.array([r.id for r in rows], dtype=np.int64), relpaths=[r.relpath for r in rows], hashes=hashes,
            features=RowView(cache.matrix(), cache.rows_for(hashes)),
        )

    # ------------------------------------------------------------------ state
    @property
    def classes(self) -> list[str]:
        return self.store.classes()

    def label_state(self) -> LabelState:
        return self.store.label_state()

    def add_class(self, name: str) -> int:
        """Register a new class name (validated); returns its id."""
        name = round_ops.validate_class_name(name)
        return self.store.ensure_classes([name])[name]

    def stats(self) -> dict[str, Any]:
        """Summary for ``status`` and the app's sidebar."""
        return round_ops.project_stats(self)

    # ------------------------------------------------------------------ rounds
    def train_round(self, config: TrainConfig, progress: Callable[[int, int, float], None] | None = None,
                    *, continue_training: bool = True) -> dict[str, Any]:
        """Train the head on seed + accepted labels, embed the pool, record the round's metrics.

        With ``config.mode == "finetune"`` the backbone's last stages are fine-tuned on the images
        too and the pool is re-embedded with it. Returns the round's metrics (including ``round``)."""
        self._current, metrics = round_ops.train_round(self, config, progress, continue_training)
        return metrics

    def current_round(self) -> round_ops.RoundEmbedding:
        """Embedding of the pool under the newest trained round (restored from its checkpoint; a
        fine-tune round reads its own feature cache, recomputed if it is missing)."""
        if self._current is None:
            rid = latest_round(self.project.checkpoints_dir)
            if rid is None:
                raise RuntimeError("no round has been trained yet; run a training round first")
            self._current = round_ops.embed_round(self, load_checkpoint(self.project.checkpoints_dir, rid))
        return self._current

    def checkpoint(self) -> Checkpoint:
        return self.current_round().checkpoint

    def propose(self, config: SuggestConfig) -> list[Suggestion]:
        """Suggestions for the unlabeled pool under the current round (stored with the round)."""
        return round_ops.propose(self, config)

    def pending_suggestions(self, round_id: int | None = None) -> list[Suggestion]:
        """Stored suggestions of a round (default: newest) that no decision has settled yet."""
        return round_ops.pending(self, round_id)

    # ------------------------------------------------------------------ decisions
    def accept(self, suggestions: Sequence[Suggestion]) -> list[int]:
        """Accept suggestions as one batch (undone together)."""
        rnd = self._round_id()
        return self.store.add_decisions([
            {"image_id": s.image_id, "class_id": s.class_id, "action": "accept", "round": rnd,
             "confidence": s.confidence}
            for s in suggestions
        ])

    def reject(self, image_id: int, class_id: int, correct_class: int | None = None) -> list[int]:
        """Reject (image, class); with ``correct_class`` the image is labeled with it."""
        self._check_ids([image_id], [class_id] + ([correct_class] if correct_class is not None else []))
        rows: list[dict[str, Any]] = [{"image_id": image_id, "class_id": class_id, "action": "reject",
                                       "round": self._round_id()}]
        if correct_class is not None:
            rows.append({"image_id": image_id, "class_id": correct_class, "action": "relabel", "round": self._round_id()})
        return self.store.add_decisions(rows)

    def reject_many(self, pairs: Sequence[tuple[int, int]]) -> list[int]:
        """Reject several (image, class) pairs as one batch."""
        self._check_ids([i for i, _ in pairs], [c for _, c in pairs])
        return self.store.add_decisions([
            {"image_id": i, "class_id": c, "action": "reject", "round": self._round_id()} for i, c in pairs
        ])

    def assign(self, image_id: int, class_name: str) -> list[int]:
        """Label an image by hand (creates the class if it is new)."""
        cid = self.add_class(class_name)
        self._check_ids([image_id], [cid])
        return self.store.add_decisions([{"image_id": image_id, "class_id": cid, "action": "assign",
                                          "round": self._round_id()}])

    def unlabel(self, image_id: int) -> list[int]:
        """Send an image back to the unlabeled pool."""
        self._check_ids([image_id], [])
        return self.store.add_decisions([{"image_id": image_id, "action": "unlabel", "round": self._round_id()}])

    def record(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Append raw decision rows as one batch (validated ids)."""
        self._check_ids([r["image_id"] for r in rows], [r["class_id"] for r in rows if r.get("class_id") is not None])
        return self.store.add_decisions(rows)

    def undo(self) -> list[int]:
        """Undo the newest batch that is still in force (a click, or a whole accepted batch).
        Returns the ids of the decisions undone (empty when there is nothing to undo)."""
        return round_ops.undo_last_batch(self.store)

    def _round_id(self) -> int | None:
        """The newest round that finished (a killed or failed round is never current)."""
        done = self.store.last_finished_round()
        return done.id if done else None

    def _check_ids(self, image_ids: Sequence[int], class_ids: Sequence[int]) -> None:
        known = self.store.known_image_ids(image_ids)
        bad = [i for i in image_ids if i not in known]
        if bad:
            raise KeyError(f"unknown image id(s) {bad[:5]}")
        n = len(self.classes)
        badc = [c for c in class_ids if not 0 <= c < n]
        if badc:
            raise KeyError(f"unknown class id(s) {badc[:5]} (there are {n} classes)")

    # ------------------------------------------------------------------ images
    def image_rows(self) -> dict[int, ImageRow]:
        """Image id → stored row, for every present image."""
        return {r.id: r for r in self.store.images()}

    def thumbnail(self, image_id: int, size: int = 192) -> Path:
        """Path of a cached thumbnail (made once, keyed by content hash and size)."""
        from labeltool.data.scan import make_thumbnail

        row = self.store.image(image_id)
        if row is None or row.status != "ok" or not row.sha256:
            raise KeyError(f"image {image_id} has no usable file")
        dest = self.project.thumbnails_dir / f"{size}" / f"{row.sha256[:2]}" / f"{row.sha256}.jpg"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            make_thumbnail(self.project.image_path(row.relpath), dest, size=size)
        return dest

    # ------------------------------------------------------------------ model and export
    def build_model(self) -> torch.nn.Module:
        """Backbone + head + classifier of the current round, in eval mode on the CPU."""
        return round_ops.build_model(self)

    def predict(self, paths: Sequence[str | Path]) -> tuple[list[str], np.ndarray]:
        """Predicted class names and probabilities ``[n, C]`` for image files, in process."""
        return round_ops.predict(self, paths)

    def export(self, out: str | Path, **options: Any) -> Path:
        """Export dataset and/or model; see :func:`labeltool.io.export.export_project`."""
        from labeltool.io.export import export_project

        return export_project(self, Path(out), **options)

    @classmethod
    def open_for_app(cls, folder: str | Path, *, project_dir: str | Path | None = None, image_size: int | None = None,
                     protected: Sequence[str | Path] = ()) -> LabelingSession:
        """Open for the web app: a protected or read-only folder gets a per-user project directory,
        and the store works from any thread (see :mod:`labeltool.ui.project_views`)."""
        from labeltool.ui.project_views import resolve_project_dir

        pdir = resolve_project_dir(folder, project_dir, protected)
        session = cls.open(folder, project_dir=pdir, config=ProjectConfig(image_size=image_size) if image_size else None)
        session.share_store_across_threads()
        return session

    def share_store_across_threads(self) -> None:
        """Give each thread its own connection to the project database."""
        from labeltool.ui.project_views import ThreadLocalStore

        if not isinstance(self.store, ThreadLocalStore):
            self.store.close()
            self.store = ThreadLocalStore(self.project.db_path)  # type: ignore[assignment]


def _as_scanned(r: ImageRow) -> ScannedFile:
    return ScannedFile(
        relpath=r.relpath, size_bytes=r.size_bytes, mtime_ns=r.mtime_ns, sha256=r.sha256, width=r.width,
        height=r.height, status=r.status, error=r.error, seed_class=None,
    )

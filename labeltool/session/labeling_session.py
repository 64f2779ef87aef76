"""``LabelingSession``: the one facade the CLI and the app use.

Open a folder, scan it, embed it, train rounds, propose suggestions, record decisions, undo,
export. Every write goes through :class:`labeltool.data.store.Store` and is durable when the method
returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labeltool.config import ExportConfig, ProjectConfig, SuggestConfig, TrainConfig
from labeltool.data.decisions import LabelState
from labeltool.data.features import FeatureCache
from labeltool.data.names import validate_class_name
from labeltool.data.pool import Pool, PoolIndex, RowView
from labeltool.data.project import Project, open_project
from labeltool.data.scan import ScannedFile, scan_folder
from labeltool.data.store import ImageRow, Store
from labeltool.data.undo import new_actor
from labeltool.io.export import DatasetExport, ModelExport, export_project
from labeltool.io.review_file import read_decisions
from labeltool.models.backbones import Backbone, create_backbone, get_spec
from labeltool.rounds.current import RoundEmbedding
from labeltool.session.auto_mode import SessionAuto
from labeltool.session.embedding import SessionEmbed
from labeltool.session.training_rounds import SessionRounds
from labeltool.session.views import SessionViews
from labeltool.suggest.propose import Suggestion
from labeltool.train.head import state_dict_of

__all__ = ["ExportConfig", "LabelingSession", "ProjectConfig", "ScanSummary", "SuggestConfig", "TrainConfig"]

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


class LabelingSession(SessionAuto, SessionEmbed, SessionRounds, SessionViews):
    """A project opened for labeling. Create with :meth:`open`."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.store = Store(project.db_path)
        self.actor = new_actor()  # stored with each decision; undo takes back only this actor's
        self._backbone: Backbone | None = None
        self._cache: FeatureCache | None = None
        self._current: RoundEmbedding | None = None
        self._index: PoolIndex | None = None

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
        relocate: bool = False,
    ) -> LabelingSession:
        """Open (or create) the project of ``folder``. A new project is scanned right away;
        pass ``scan=True`` to rescan an existing one, ``relocate=True`` to move an existing
        project (``project_dir``) to ``folder`` after its image folder was moved or renamed."""
        project = open_project(folder, project_dir=project_dir, config=config, create=create, relocate=relocate)
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

    def _usable_images(self) -> list[ImageRow]:
        return [r for r in self.store.images() if r.status == "ok"]

    def pool_index(self) -> PoolIndex:
        """The usable images and which have cached features; read again only after the image
        rows or the feature cache changed (a page that needs counts reads no image rows)."""
        cache = self.feature_cache()
        cache.refresh()
        key = (self.store.images_version(), len(cache))
        if self._index is None or self._index.key != key:
            self._index = PoolIndex.build(key, self.store.usable_rows(), cache, self.store.present_counts())
        return self._index

    def pool(self) -> Pool:
        """Usable images whose features are cached, in image-id order."""
        ids, relpaths, hashes = self.pool_index().pool_rows()
        cache = self.feature_cache()
        return Pool(ids=ids, relpaths=relpaths, hashes=hashes, features=RowView(cache.matrix(), cache.rows_for(hashes)))

    # ------------------------------------------------------------------ state
    @property
    def classes(self) -> list[str]:
        return self.store.classes()

    def label_state(self) -> LabelState:
        return self.store.label_state()

    def add_class(self, name: str) -> int:
        """Register a new class name (validated); returns its id."""
        name = validate_class_name(name)
        return self.store.ensure_classes([name])[name]

    def stats(self) -> dict[str, Any]:
        """Summary for ``status`` and the app's sidebar."""
        index = self.pool_index()
        rounds = self.store.rounds()
        spec = self.backbone_spec
        return {
            "image_root": str(self.project.image_root), "project_dir": str(self.project.dir),
            "images": index.present, "usable": len(index.ids), "broken": index.unusable,
            **label_counts(self.label_state(), index.id_set, self.classes),
            "embedded": int(np.count_nonzero(index.cached)), "backbone": spec.name, "input_size": spec.input_size,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "rounds": sum(1 for r in rounds if r.finished is not None), "last_round": rounds[-1].metrics if rounds else None,
        }

    # ------------------------------------------------------------------ decisions
    def accept(self, suggestions: Sequence[Suggestion]) -> list[int]:
        """Accept suggestions as one batch (undone together)."""
        rnd = self._round_id()
        return self.store.add_decisions([
            {"image_id": s.image_id, "class_id": s.class_id, "action": "accept", "round": rnd,
             "confidence": s.confidence}
            for s in suggestions
        ], self.actor)

    def reject(self, image_id: int, class_id: int, correct_class: int | None = None) -> list[int]:
        """Reject (image, class); with ``correct_class`` the image is labeled with it."""
        self._check_ids([image_id], [class_id] + ([correct_class] if correct_class is not None else []))
        rows: list[dict[str, Any]] = [{"image_id": image_id, "class_id": class_id, "action": "reject",
                                       "round": self._round_id()}]
        if correct_class is not None:
            rows.append({"image_id": image_id, "class_id": correct_class, "action": "relabel", "round": self._round_id()})
        return self.store.add_decisions(rows, self.actor)

    def reject_many(self, pairs: Sequence[tuple[int, int]]) -> list[int]:
        """Reject several (image, class) pairs as one batch."""
        self._check_ids([i for i, _ in pairs], [c for _, c in pairs])
        return self.store.add_decisions([
            {"image_id": i, "class_id": c, "action": "reject", "round": self._round_id()} for i, c in pairs
        ], self.actor)

    def assign(self, image_id: int, class_name: str) -> list[int]:
        """Label an image by hand (creates the class if it is new)."""
        cid = self.add_class(class_name)
        self._check_ids([image_id], [cid])
        return self.store.add_decisions([{"image_id": image_id, "class_id": cid, "action": "assign",
                                          "round": self._round_id()}], self.actor)

    def unlabel(self, image_id: int) -> list[int]:
        """Send an image back to the unlabeled pool."""
        self._check_ids([image_id], [])
        return self.store.add_decisions([{"image_id": image_id, "action": "unlabel", "round": self._round_id()}],
                                        self.actor)

    def record(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Append raw decision rows as one batch (validated ids)."""
        self._check_ids([r["image_id"] for r in rows], [r["class_id"] for r in rows if r.get("class_id") is not None])
        return self.store.add_decisions(rows, self.actor)

    def annotate_round(self, round_id: int, extra: dict[str, Any]) -> None:
        """Add entries to a finished round's stored metrics (e.g. a self-training report)."""
        self.store.update_round_metrics(round_id, extra)

    def decisions_from_file(self, path: str | Path) -> list[dict[str, Any]]:
        """Decision rows from a review CSV (validated whole; see :mod:`labeltool.io.review_file`),
        ready for :meth:`record`."""
        usable = {r.relpath: r.id for r in self.store.images() if r.status == "ok"}
        return read_decisions(Path(path), usable, self.classes, self._round_id())

    def undo(self) -> list[int]:
        """Undo this session's newest batch that is still in force (a click, or a whole accepted
        batch); batches recorded by other sessions or processes are left alone, those of projects
        older than actor ids count as anyone's (see :mod:`labeltool.data.undo`).
        Returns the ids of the decisions undone (empty when there is nothing to undo)."""
        return self.store.undo_last_batch(self.actor)

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
    def export(self, out: str | Path, config: ExportConfig | None = None, **options: bool) -> Path:
        """Export the labeled dataset and/or the current round's model into ``out`` atomically.

        ``options`` override fields of ``config`` (default :class:`~labeltool.config.ExportConfig`);
        see :func:`labeltool.io.export.export_project` for what is refused."""
        cfg = replace(config or ExportConfig(), **options)
        return export_project(
            self.project, Path(out), dataset=self._dataset_export if cfg.dataset else None,
            model=self._model_export if cfg.model else None, link=cfg.link, overwrite=cfg.overwrite,
            include_pseudo=cfg.include_pseudo,
        )

    def _dataset_export(self) -> DatasetExport:
        images = {r.id: r for r in self.store.images() if r.status == "ok"}
        return DatasetExport(self.label_state(), self.classes, images)

    def _model_export(self) -> ModelExport:
        ckpt = self.checkpoint()
        info = {
            "round": ckpt.round, "loss": ckpt.loss.config(), "head": ckpt.head.config(),
            "classifier": "loss" if ckpt.loss.has_classifier else "prototypes",
            "train_config": ckpt.meta.get("train_config"), "project": str(self.project.image_root.name),
        }
        return ModelExport(self.build_model(), self.checkpoint_base(ckpt).spec, self.classes, info,
                           state_dict_of(ckpt.head, ckpt.loss))

    @classmethod
    def open_for_app(cls, folder: str | Path, *, project_dir: str | Path | None = None, image_size: int | None = None,
                     protected: Sequence[str | Path] = ()) -> LabelingSession:
        """Open for the web app: a protected or read-only folder gets a per-user project directory,
        and the store works from any thread (see :mod:`labeltool.data.thread_store`)."""
        from labeltool.data.user_dirs import resolve_project_dir

        pdir = resolve_project_dir(folder, project_dir, protected)
        session = cls.open(folder, project_dir=pdir, config=ProjectConfig(image_size=image_size) if image_size else None)
        session.share_store_across_threads()
        return session

    def share_store_across_threads(self) -> None:
        """Give each thread its own connection to the project database."""
        from labeltool.data.thread_store import ThreadLocalStore

        if not isinstance(self.store, ThreadLocalStore):
            self.store.close()
            self.store = ThreadLocalStore(self.project.db_path)  # type: ignore[assignment]


def label_counts(state: LabelState, present: Collection[int], classes: list[str]) -> dict[str, Any]:
    """Labeled and unlabeled counts of the ``present`` usable images, by source and by class."""
    labels = {i: c for i, c in state.labels.items() if i in present}
    per_class = Counter(classes[c] for c in labels.values())
    return {
        "labeled": len(labels), "unlabeled": len(present) - len(labels),
        "by_source": dict(Counter(state.source[i] for i in labels)),
        "classes": classes, "per_class": {c: per_class.get(c, 0) for c in classes},
    }


def _as_scanned(r: ImageRow) -> ScannedFile:
    return ScannedFile(
        relpath=r.relpath, size_bytes=r.size_bytes, mtime_ns=r.mtime_ns, sha256=r.sha256, width=r.width,
        height=r.height, status=r.status, error=r.error, seed_class=None,
    )

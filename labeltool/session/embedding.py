"""Embedding the pool: what runs the backbone, in what order, and the background job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labeltool.config import EXTRACT_RUNTIME, FIRST_EMBED_SAMPLE
from labeltool.data.decisions import LabelState
from labeltool.data.embed_order import embedding_order
from labeltool.data.features import FeatureCache
from labeltool.data.project import Project
from labeltool.data.store import ImageRow
from labeltool.io.embed_job import EmbedJobStatus, JobProgress, read_job, start_job, stop_job
from labeltool.models.backbones import Backbone
from labeltool.models.extract import ExtractionResult, Progress, extract_to_cache, pick_device


class SessionEmbed:
    """Mixin of :class:`~labeltool.session.LabelingSession`: computing the backbone features."""

    project: Project

    if TYPE_CHECKING:  # provided by LabelingSession
        def scan(self) -> object: ...
        def backbone(self, with_classifier: bool = False) -> Backbone: ...
        def feature_cache(self) -> FeatureCache: ...
        def label_state(self) -> LabelState: ...
        def _usable_images(self) -> list[ImageRow]: ...
        def missing_features(self) -> int: ...

    @property
    def runtime_dir(self) -> Path:
        """Where the backbone's exports for inference runtimes are kept (one file per feature key)."""
        return self.project.cache_dir / "runtime"

    def embed(
        self, progress: Progress | None = None, *, device: str = "auto", rescan: bool = True,
        num_workers: int | None = None, runtime: str = EXTRACT_RUNTIME, limit: int | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> ExtractionResult:
        """Compute backbone features for the usable images not yet cached, labeled ones first and
        then the rest in a representative order (:func:`~labeltool.data.embed_order.embedding_order`);
        ``limit`` stops after that many. ``runtime`` runs the backbone (``auto``: an inference
        runtime on a CPU, its ONNX export kept in the project)."""
        if rescan:
            self.scan()
        rows = [r for r in self._usable_images() if r.sha256]
        labeled = self.label_state().labels
        order = embedding_order([r.sha256 or "" for r in rows], np.array([r.id in labeled for r in rows], dtype=bool))
        items = [(rows[i].sha256 or "", self.project.image_path(rows[i].relpath)) for i in order]
        result = extract_to_cache(
            self.backbone(), self.feature_cache(), items, batch_size=self.project.config.embed_batch_size,
            device=pick_device(device), num_workers=num_workers, progress=progress,
            runtime=runtime, export_dir=self.runtime_dir, limit=limit, on_stage=on_stage,
        )
        if result.failed:  # decoded at scan time but not now (changed on disk mid-run): rescan records why
            self.scan()
        return result

    def start_embed_job(self, runtime: str = EXTRACT_RUNTIME) -> EmbedJobStatus:
        """Embed the images still missing in a background process (one per project; see
        :mod:`labeltool.io.embed_job`); returns its status."""
        return start_job(self.project.image_root, self.project.dir, self.project.cache_dir, runtime=runtime)

    def stop_embed_job(self) -> bool:
        """Stop the background embedding job (what it embedded stays cached); True if one ran."""
        return stop_job(self.project.cache_dir)

    def embed_job(self) -> EmbedJobStatus | None:
        """The background embedding job's last status (None when there never was one)."""
        return read_job(self.project.cache_dir)

    def run_embed_job(self, **embed_options: Any) -> ExtractionResult:
        """The background job's own work: :meth:`embed` what is missing (no rescan), reporting
        progress, the end, or the error to the job's file for the app and ``labeltool status``."""
        progress = JobProgress(self.project.cache_dir)
        try:
            result = self.embed(progress, rescan=False, **embed_options)
        except BaseException as e:
            progress.finish(error=f"{type(e).__name__}: {e}")
            raise
        progress.finish(runtime=result.runtime)
        return result

    def embed_first(self, progress: Progress | None = None,
                    on_stage: Callable[[str], None] | None = None) -> ExtractionResult:
        """Embed what a first round needs now (the labeled images and a representative sample of
        :data:`~labeltool.config.FIRST_EMBED_SAMPLE` others), then the rest in a background job."""
        result = self.embed(progress, rescan=False, limit=len(self.label_state().labels) + FIRST_EMBED_SAMPLE,
                            on_stage=on_stage)
        if self.missing_features():
            self.start_embed_job()
        return result

    def embed_job_progress_line(self) -> tuple[str, float] | None:
        """``(text, fraction done)`` of a running background embedding job, else None."""
        job = self.embed_job()
        if job is None or not job.running:
            return None
        return job.line(), (job.done / job.total if job.total else 0.0)


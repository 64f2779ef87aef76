"""What the app shows of a session, as methods of :class:`labeltool.session.LabelingSession`:
settings controls and the configs they make, the review page, a round run from the app,
precision estimates, figures, the projection, exports.

Each method gathers the session's own data and hands it to a pure function of
:mod:`labeltool.ui` (or returns it as is); only :meth:`SessionViews.run_app_round` writes, through
the session's own round methods. The modules of :mod:`labeltool.ui` are imported on first use,
so the command line never loads the plotting stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labeltool.config import ExportConfig, SuggestConfig, TrainConfig
from labeltool.errors import NoRoundError, StaleFeaturesError

if TYPE_CHECKING:
    from labeltool.data.decisions import LabelState
    from labeltool.data.features import FeatureCache
    from labeltool.data.pool import Pool, PoolIndex
    from labeltool.data.project import Project
    from labeltool.data.store import Store
    from labeltool.eval.calibration import BatchEstimate
    from labeltool.io.export import DatasetExport, ModelExport
    from labeltool.models.backbones import BackboneSpec
    from labeltool.rounds.current import RoundEmbedding
    from labeltool.rounds.proposal import Coverage
    from labeltool.suggest.propose import Suggestion
    from labeltool.ui.cards import Button, Card
    from labeltool.ui.figures import Projection
    from labeltool.ui.messages import Attempt
    from labeltool.ui.pages import PageText, ReviewPage, RoundOutcome, TrainProgress
    from labeltool.ui.queue import Disputed, PrecisionEstimate
    from labeltool.ui.settings import Control, LossInfo


class SessionViews:
    """Mixin of :class:`~labeltool.session.LabelingSession` for the app."""

    project: Project
    store: Store

    if TYPE_CHECKING:  # provided by LabelingSession
        @property
        def classes(self) -> list[str]: ...
        @property
        def backbone_spec(self) -> BackboneSpec: ...
        def label_state(self) -> LabelState: ...
        def current_round(self) -> RoundEmbedding: ...
        def pending_suggestions(self, round_id: int | None = None) -> list[Suggestion]: ...
        def batch_estimate(self, suggestions: Sequence[Suggestion]) -> BatchEstimate: ...
        def coverage(self, target: float | None = None) -> Coverage | None: ...
        def calibrated(self, suggestions: Sequence[Suggestion]) -> list[Suggestion]: ...
        def feature_cache(self) -> FeatureCache: ...
        def pool(self) -> Pool: ...
        def pool_index(self) -> PoolIndex: ...
        def stats(self) -> dict[str, Any]: ...
        def train_round(self, config: TrainConfig, progress: Callable[[int, int, float], None] | None = None,
                        *, continue_training: bool = True,
                        on_stage: Callable[[str], None] | None = None) -> dict[str, Any]: ...
        def propose(self, config: SuggestConfig) -> list[Suggestion]: ...
        def export(self, out: str | Path, config: ExportConfig | None = None, **options: bool) -> Path: ...
        def _dataset_export(self) -> DatasetExport: ...
        def _model_export(self) -> ModelExport: ...

    # ------------------------------------------------------------------ app state and text
    @staticmethod
    def app_state(argv: Sequence[str], default_folder: str | Path) -> dict[str, Any]:
        """The app's starting state from its command line (see :mod:`labeltool.ui.app_state`)."""
        from labeltool.ui.app_state import app_state

        return app_state(argv, default_folder)

    @staticmethod
    def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Attempt:
        """Call ``fn``; an error meant for the user comes back as a message (see :mod:`labeltool.ui.messages`)."""
        from labeltool.ui.messages import attempt

        return attempt(fn, *args, **kwargs)

    @property
    def text(self) -> PageText:
        """The lines of text the pages show for this project's classes."""
        from labeltool.ui.pages import PageText

        return PageText(tuple(self.classes))

    def dispute_cards(self, disputed: Sequence[Disputed]) -> list[Card]:
        """Cards of the disputed labels the Dataset page shows (the most contested first)."""
        from labeltool.ui.cards import dispute_card
        from labeltool.ui.pages import DISPUTED_SHOWN

        return [dispute_card(d, self.classes) for d in disputed[:DISPUTED_SHOWN]]

    @staticmethod
    def selected_image(event: Any) -> int | None:
        """The image id of the first point selected in the Explore chart (None: no selection)."""
        from labeltool.ui.pages import selected_image

        return selected_image(event)

    # ------------------------------------------------------------------ settings
    def loss_catalog(self) -> dict[str, LossInfo]:
        """Registered losses with their hyperparameters: name → LossInfo."""
        from labeltool.ui.settings import loss_catalog

        return loss_catalog()

    def setting_choices(self) -> dict[str, tuple[str, ...]]:
        """Valid suggestion sources, kNN confidence modes and training modes."""
        from labeltool.ui.settings import setting_choices

        return setting_choices()

    def loss_control(self) -> Control:
        """The loss choice of the sidebar."""
        from labeltool.ui.settings import loss_control

        return loss_control(list(self.loss_catalog()))

    def train_controls(self, loss: str) -> tuple[Control, ...]:
        """The hyperparameters of ``loss``, then the training settings (see :mod:`labeltool.ui.settings`)."""
        from labeltool.ui.settings import hyper_controls, train_controls

        return hyper_controls(loss) + train_controls(self.default_embedding_dim())

    def suggest_controls(self, loss: str) -> tuple[Control, ...]:
        """The suggestion settings usable with ``loss`` (sources that need a classifier only with one)."""
        from labeltool.ui.settings import suggest_controls

        return suggest_controls(self.loss_catalog()[loss].has_classifier)

    def page_controls(self, page: str) -> tuple[Control, ...]:
        """The controls of the ``review``, ``explore``, ``dataset`` or ``export`` page."""
        from labeltool.ui import pages

        makers: dict[str, Callable[[], tuple[Control, ...]]] = {
            "review": lambda: pages.review_controls(self.classes), "explore": pages.explore_controls,
            "dataset": pages.dataset_controls, "export": pages.export_controls,
        }
        if page not in makers:
            raise ValueError(f"no controls for page {page!r}; valid: {sorted(makers)}")
        return makers[page]()

    def train_config_from(self, loss: str, values: Mapping[str, Any]) -> TrainConfig:
        """The training config of the sidebar's values (``ValueError`` when one is invalid)."""
        from labeltool.ui.settings import train_config_from

        return train_config_from(loss, values)

    def suggest_config_from(self, values: Mapping[str, Any]) -> SuggestConfig:
        """The suggestion config of the sidebar's values (``ValueError`` when one is invalid)."""
        from labeltool.ui.settings import suggest_config_from

        return suggest_config_from(values)

    def default_embedding_dim(self) -> int:
        """The embedding dimension a round uses when none is given."""
        return TrainConfig().resolved_dim(len(self.classes))

    def embedding_dim_warning(self, embedding_dim: int | None) -> str | None:
        """The C-1 warning for ``embedding_dim`` (0 or None = the default) with this project's classes."""
        from labeltool.train.head import dimension_warning

        return dimension_warning(embedding_dim or self.default_embedding_dim(), len(self.classes))

    # ------------------------------------------------------------------ Review and Train
    def review_queue(self, class_id: int | None = None, order: str = "high first") -> list[Suggestion]:
        """Pending suggestions of the newest round, filtered by class and sorted."""
        from labeltool.ui.queue import filter_sort

        return filter_sort(self.pending_suggestions(), class_id, order)

    def review_page(self, values: Mapping[str, Any], page_number: int,
                    layout: Sequence[Suggestion] | None = None) -> ReviewPage:
        """Page ``page_number`` (1-based, clamped) of the queue under the Review controls' ``values``;
        ``layout``: the suggestions the page showed before, kept in place (None: a fresh page)."""
        from labeltool.ui.pages import review_page

        state = self.label_state()
        pending = self.calibrated(self.pending_suggestions())  # cards show the probability of being right
        return review_page(pending, self.classes, values, page_number, labeled=len(state.labels),
                           precision=self.batch_precision, state=state, name_of=self.file_name, layout=layout)

    @staticmethod
    def review_hold_key() -> str:
        """The app-state key under which the Review page keeps its cards in place."""
        from labeltool.ui.cards import HOLD

        return HOLD

    @staticmethod
    def undo_button(key: str) -> Button:
        """An Undo button (of the newest click or batch) to show beside a message."""
        from labeltool.ui.cards import undo_button

        return undo_button(key)

    def file_name(self, image_id: int) -> str:
        """The file name of an image (``image <id>`` for an id the project does not know)."""
        row = self.store.image(image_id)
        return Path(row.relpath).name if row is not None else f"image {image_id}"

    def evidence_thumbs(self, s: Suggestion) -> list[tuple[int, str]]:
        """``(image_id, file name caption)`` of the suggested image and its evidence."""
        return self.text.evidence_thumbs(s, self.file_name)

    def batch_precision(self, suggestions: Sequence[Suggestion]) -> PrecisionEstimate:
        """Estimated precision of a batch with its 90% interval, checked on the verified labels
        (:meth:`~labeltool.session.LabelingSession.batch_estimate`)."""
        from labeltool.ui.queue import PrecisionEstimate

        est = self.batch_estimate(suggestions)
        return PrecisionEstimate(est.value, est.basis, est.low, est.high)

    def trust_notes(self, suggestions: Sequence[Suggestion]) -> list[tuple[str, str, float | None]]:
        """``(kind, markdown, meter value)`` the Review page shows above a batch: the coverage meter's line, a
        warning when the batch's estimated precision is below ``SuggestConfig.warn_below``, and
        the class-balance flags of the newest round."""
        from labeltool.ui.pages import trust_notes

        last = self.store.last_finished_round()
        flags = ((last.metrics or {}).get("proposal") or {}).get("balance_flags", []) if last is not None else []
        end_to_end = last is not None and last.trained_end_to_end
        return trust_notes(self.batch_precision(suggestions) if suggestions else None, self.coverage(), flags,
                           SuggestConfig().warn_below, end_to_end)

    def train_progress(self) -> TrainProgress:
        """A fresh loss trace for a round's progress display."""
        from labeltool.ui.pages import TrainProgress

        return TrainProgress()

    def run_app_round(self, train: TrainConfig, suggest: SuggestConfig, *,
                      progress: Callable[[int, int, float], None] | None = None, continue_training: bool = True,
                      start_umap: bool = False, on_stage: Callable[[str, float], None] | None = None) -> RoundOutcome:
        """Train a round, propose its batch and (``start_umap``) start its UMAP in the background;
        ``on_stage(text, fraction done)`` hears what mode auto scores before training starts, and
        when proposing begins.

        A UMAP still computing for an earlier round is stopped first, so the round never competes
        with it for the CPU."""
        from labeltool.ui.figures import UMAP_JOBS
        from labeltool.ui.pages import RoundOutcome

        UMAP_JOBS.cancel_all()
        stage = None if on_stage is None else (lambda text: on_stage(text, 0.0))
        metrics = self.train_round(train, progress=progress, continue_training=continue_training, on_stage=stage)
        if on_stage is not None:
            on_stage("Proposing suggestions…", 1.0)
        rows = self.propose(suggest)
        if start_umap:
            self.projection(start_umap=True)
        return RoundOutcome(metrics, rows)

    @staticmethod
    def loss_figure(losses: Sequence[float]) -> Any:
        """The loss curve of a running round (readable ticks at any scale)."""
        from labeltool.ui.figures import loss_figure

        return loss_figure(losses)

    @staticmethod
    def compactness_help() -> str:
        """What C-Inter, W-Inter and WC-Intra of the round chart measure."""
        from labeltool.ui.figures import COMPACTNESS_HELP

        return COMPACTNESS_HELP

    def rounds_figure(self) -> Any:
        """Round history chart (None before the first round)."""
        from labeltool.ui.project_views import rounds_figure

        return rounds_figure(self.store.rounds())

    def rounds_table(self) -> Any:
        """Round history as a DataFrame."""
        from labeltool.ui.figures import rounds_frame

        return rounds_frame(self.store.rounds())

    # ------------------------------------------------------------------ Dataset and Explore
    def missing_features(self) -> int:
        """Usable images still to embed."""
        return self.pool_index().missing

    def disputed_labels(self, k: int = 5, min_share: float = 0.6, space: str = "embedding") -> list[Disputed]:
        """Labeled images whose neighbours vote for another class, in the learned ``embedding`` or
        the ``backbone`` features (which never saw the labels)."""
        from labeltool.ui.project_views import dispute_arrays, disputed

        ids, vectors = dispute_arrays(space, self._round_or_none() if space == "embedding" else None, self.pool())
        return disputed(ids, vectors, self.label_state().labels, k, min_share)

    def class_counts_figure(self) -> Any:
        """Labeled images per class, with pending suggestions stacked."""
        from labeltool.ui.project_views import class_counts_figure

        return class_counts_figure(self.stats()["per_class"], self.pending_suggestions(), self.classes)

    def projection(self, start_umap: bool = True) -> Projection:
        """2-D projection of the current embedding (cached UMAP, else PCA while UMAP runs)."""
        from labeltool.ui.project_views import current_projection

        return current_projection(self.project.cache_dir, self._round_or_none(), self.pool(),
                                  self.backbone_spec.cache_key(), start_umap=start_umap)

    def explore_figure(self, proj: Projection, color_by: str = "label") -> Any:
        """WebGL scatter of a projection coloured by label, source or confidence."""
        from labeltool.ui.project_views import explore_figure, explore_frame

        frame = explore_frame(proj, self.label_state(), self.classes, self.pending_suggestions(),
                              self._round_or_none())
        return explore_figure(frame, proj, color_by)

    def image_info(self, image_id: int) -> dict[str, Any]:
        """Path, label and pending suggestion of one image."""
        from labeltool.ui.project_views import image_info

        return image_info(image_id, self.store.image(image_id), self.label_state(), self.classes,
                          self.pending_suggestions())

    def _round_or_none(self) -> RoundEmbedding | None:
        """The newest round's embedding of the pool; None before the first round, or when the saved
        round was trained on other features than the cache holds now."""
        try:
            return self.current_round()
        except (NoRoundError, StaleFeaturesError):
            return None

    # ------------------------------------------------------------------ export
    def default_export_dir(self, base: str | Path | None = None, avoid: Sequence[str | Path] = ()) -> Path:
        """A fresh ``<folder>-round<N>`` export folder under ``base`` (default: ``~/labeltool-exports``),
        never inside the image folder, the project directory or a folder of ``avoid``."""
        from labeltool.ui.project_views import default_export_dir

        rounds = self.store.rounds()
        return default_export_dir(self.project.image_root, rounds[-1].id if rounds else None, base,
                                  avoid=(self.project.dir, *map(Path, avoid)))

    def export_from_app(self, out: str | Path, *, include_pending: bool = False, **options: bool) -> Path:
        """:meth:`export` with the Export page's options: ``include_pending`` adds the newest round's
        pending suggestions as unreviewed labels; a refusal to overwrite names the page's checkbox."""
        from labeltool.io.export import PendingLabel, export_project
        from labeltool.io.export_target import TargetExistsError
        from labeltool.ui.pages import OVERWRITE_LABEL

        pending = [PendingLabel(s.image_id, s.class_id, s.confidence, self._newest_round_id())
                   for s in self.pending_suggestions()] if include_pending and options.get("dataset", True) else []
        try:
            if not pending:
                return self.export(out, None, **options)
            cfg = replace(ExportConfig(), **options)
            return export_project(
                self.project, Path(out), dataset=lambda: replace(self._dataset_export(), pending=pending),
                model=self._model_export if cfg.model else None, link=cfg.link, overwrite=cfg.overwrite,
                include_pseudo=cfg.include_pseudo)
        except TargetExistsError as e:
            raise e.worded(f"tick **{OVERWRITE_LABEL}**") from None

    def _newest_round_id(self) -> int | None:
        rounds = self.store.rounds()
        return rounds[-1].id if rounds else None

    def export_options(self, values: Mapping[str, Any]) -> dict[str, bool]:
        """Keyword arguments of :meth:`export` from the Export page's control values."""
        from labeltool.ui.pages import export_options

        return export_options(values)

    def export_summary(self, out: str | Path) -> dict[str, Any]:
        """What an export folder holds, with the manifest's bytes for download."""
        from labeltool.ui.project_views import export_summary

        return export_summary(out)

"""What the app shows of a session, as methods of :class:`labeltool.session.LabelingSession`:
settings choices, the review queue, precision estimates, figures, the projection, exports.

Each method gathers the session's own data and hands it to a pure function of
:mod:`labeltool.ui` (or returns it as is); nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labeltool.config import TrainConfig

if TYPE_CHECKING:
    from labeltool.data.project import Project
    from labeltool.data.store import Store
    from labeltool.suggest.propose import Suggestion


class SessionViews:
    """Mixin of :class:`~labeltool.session.LabelingSession` for the app (read-only views)."""

    project: Project
    store: Store

    def loss_catalog(self) -> dict[str, Any]:
        """Registered losses with their hyperparameters: name → LossInfo."""
        from labeltool.ui.project_views import loss_catalog

        return loss_catalog()

    def setting_choices(self) -> dict[str, tuple[str, ...]]:
        """Valid suggestion sources, kNN confidence modes and training modes."""
        from labeltool.ui.project_views import setting_choices

        return setting_choices()

    def default_embedding_dim(self) -> int:
        """The embedding dimension a round uses when none is given."""
        return TrainConfig().resolved_dim(len(self.classes))

    def embedding_dim_warning(self, embedding_dim: int | None) -> str | None:
        """The C-1 warning for ``embedding_dim`` (None = the default) with this project's classes."""
        from labeltool.train.head import dimension_warning

        return dimension_warning(embedding_dim or self.default_embedding_dim(), len(self.classes))

    def missing_features(self) -> int:
        """Usable images still to embed."""
        from labeltool.ui import project_views as app_project

        return app_project.missing_features(self)

    def review_queue(self, class_id: int | None = None, order: str = "high first") -> list[Suggestion]:
        """Pending suggestions of the newest round, filtered by class and sorted."""
        from labeltool.ui.queue import filter_sort

        return filter_sort(self.pending_suggestions(), class_id, order)

    def batch_precision(self, suggestions: Sequence[Suggestion]) -> Any:
        """Estimated precision of a batch: a PrecisionEstimate (value, basis)."""
        from labeltool.ui import project_views as app_project

        return app_project.batch_precision(self, suggestions)

    def disputed_labels(self, k: int = 5, min_share: float = 0.6, space: str = "embedding") -> list[Any]:
        """Labeled images whose neighbours vote for another class, in the learned ``embedding`` or
        the ``backbone`` features (which never saw the labels)."""
        from labeltool.ui import project_views as app_project

        return app_project.disputed(self, k, min_share, space)

    def projection(self, start_umap: bool = True) -> Any:
        """2-D projection of the current embedding (cached UMAP, else PCA while UMAP runs)."""
        from labeltool.ui.project_views import current_projection

        return current_projection(self, start_umap=start_umap)

    def explore_figure(self, proj: Any, color_by: str = "label") -> Any:
        """WebGL scatter of a projection coloured by label, source or confidence."""
        from labeltool.ui.project_views import explore_figure

        return explore_figure(self, proj, color_by)

    def rounds_figure(self) -> Any:
        """Round history chart (None before the first round)."""
        from labeltool.ui.project_views import rounds_figure

        return rounds_figure(self)

    def rounds_table(self) -> Any:
        """Round history as a DataFrame."""
        from labeltool.ui.figures import rounds_frame

        return rounds_frame(self.store.rounds())

    def class_counts_figure(self) -> Any:
        """Labeled images per class, with pending suggestions stacked."""
        from labeltool.ui.project_views import class_counts_figure

        return class_counts_figure(self)

    def image_info(self, image_id: int) -> dict[str, Any]:
        """Path, label and pending suggestion of one image."""
        from labeltool.ui import project_views as app_project

        return app_project.image_info(self, image_id)

    def default_export_dir(self, base: str | Path | None = None) -> Path:
        """A fresh ``models/<folder>-round<N>`` export folder."""
        from labeltool.ui import project_views as app_project

        return app_project.default_export_dir(self, base)

    def export_summary(self, out: str | Path) -> dict[str, Any]:
        """What an export folder holds, with the manifest's bytes for download."""
        from labeltool.ui import project_views as app_project

        return app_project.export_summary(out)


"""The session: one labeling project behind one object, for the app and the command line.

:class:`LabelingSession` is a thin facade (:mod:`~labeltool.session.labeling_session`) over the
layers below; its methods are grouped by what they do:

- :mod:`~labeltool.session.embedding`: computing the backbone features (first sample, background job);
- :mod:`~labeltool.session.training_rounds`: training rounds and their products (proposals, checks);
- :mod:`~labeltool.session.auto_mode`: mode ``auto`` and rounds that train another network;
- :mod:`~labeltool.session.views`: what the app shows (settings choices, review page, figures, exports).

Nothing below this package imports it.
"""

from labeltool.config import ExportConfig, ProjectConfig, SuggestConfig, TrainConfig
from labeltool.session.labeling_session import LabelingSession, ScanSummary

__all__ = ["ExportConfig", "LabelingSession", "ProjectConfig", "ScanSummary", "SuggestConfig", "TrainConfig"]

"""The frozen configurations of a project, a training round and a suggestion batch, with their
defaults: the one place defaults live. The CLI and the app read their choices and defaults from
these classes (and from the loss, backbone and source registries). Each config validates itself on
construction and round-trips through JSON, so a saved round can be reproduced.

- :mod:`~labeltool.config.project`: the project, feature extraction and export settings;
- :mod:`~labeltool.config.train`: a training round (head, end-to-end or ``auto``) and self-training;
- :mod:`~labeltool.config.finetune`: the end-to-end (fine-tuning) run inside a round;
- :mod:`~labeltool.config.suggest`: how suggestions are scored and selected.
"""

from labeltool.config.finetune import AMP_MODES, LR_SCHEDULES, SCRATCH_STEPS, FinetuneConfig
from labeltool.config.project import (
    EXPORT_MIN_IMAGES,
    EXTRACT_RUNTIME,
    FIRST_EMBED_SAMPLE,
    ExportConfig,
    ProjectConfig,
)
from labeltool.config.suggest import BALANCE_MODES, SOURCES, SuggestConfig
from labeltool.config.train import NEW_PROJECT_MODE, REVIEWERS, TRAIN_MODES, SelftrainConfig, TrainConfig

__all__ = [
    "AMP_MODES", "BALANCE_MODES", "EXPORT_MIN_IMAGES", "EXTRACT_RUNTIME", "FIRST_EMBED_SAMPLE", "LR_SCHEDULES",
    "NEW_PROJECT_MODE", "REVIEWERS", "SCRATCH_STEPS", "SOURCES", "TRAIN_MODES", "ExportConfig", "FinetuneConfig",
    "ProjectConfig", "SelftrainConfig", "SuggestConfig", "TrainConfig",
]

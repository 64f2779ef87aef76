"""Settings of a project (fixed at creation), of feature extraction, and of an export."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labeltool.data.decode import DEFAULT_MAX_PIXELS
from labeltool.models.backbones import DEFAULT_BACKBONE, get_spec

# feature extraction: "auto" runs the backbone in an inference runtime on a CPU (OpenVINO, else
# ONNX Runtime; labeltool/models/runtimes.py) and in PyTorch on a GPU
EXTRACT_RUNTIME = "auto"
# "auto" exports the backbone (about 3-15 s) only for a job of this many images or more, unless an
# export is already cached: at 224 px it pays back from a few hundred images on a 2-core CPU
EXPORT_MIN_IMAGES = 512
# a new project in the app embeds the labeled images and this many others first (a representative
# sample: benchmarks/README.md §3), proposes from them, and embeds the rest in the background
FIRST_EMBED_SAMPLE = 1000


@dataclass(frozen=True)
class ProjectConfig:
    """Per-project settings fixed at creation (changing the backbone starts a new feature cache)."""

    backbone: str = DEFAULT_BACKBONE
    image_size: int | None = None  # None → the backbone's native size
    checkpoint: str | None = None  # local weights for 'timm:<arch>' backbones
    max_pixels: int = DEFAULT_MAX_PIXELS
    embed_batch_size: int = 32

    def __post_init__(self) -> None:
        get_spec(self.backbone, image_size=self.image_size, checkpoint=self.checkpoint)  # validates
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        if self.embed_batch_size < 1:
            raise ValueError(f"embed_batch_size must be positive, got {self.embed_batch_size}")

    @staticmethod
    def from_json(data: dict[str, Any]) -> ProjectConfig:
        known = {k: v for k, v in data.items() if k in ProjectConfig.__dataclass_fields__}
        return ProjectConfig(**known)


@dataclass(frozen=True)
class ExportConfig:
    """What an export writes: the dataset, the model or both; hard links instead of copies;
    whether it may replace a non-empty folder; whether unreviewed (pseudo) labels go in."""

    dataset: bool = True
    model: bool = True
    link: bool = False
    overwrite: bool = False
    include_pseudo: bool = True

    def __post_init__(self) -> None:
        for name in ("dataset", "model", "link", "overwrite", "include_pseudo"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

"""Exported models: save a self-contained TorchScript of backbone + head + classifier with a JSON
description, and load it back with :func:`load_model` for prediction (no labeltool state needed).

Folder layout::

    model.json          backbone id, preprocessing, class names, loss, round, versions
    head.safetensors    projection head + loss parameters (to continue training in labeltool)
    model.torchscript.pt   preprocessed images [B, 3, S, S] -> probabilities [B, C]
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save as safetensors_bytes

from labeltool.data.scan import load_image
from labeltool.io.disk_space import ensure_free_space, write_file
from labeltool.models.backbones import BackboneSpec, make_preprocess, rgb_triple
from labeltool.models.heads import LabelerModel

MODEL_JSON = "model.json"
TORCHSCRIPT = "model.torchscript.pt"
HEAD_WEIGHTS = "head.safetensors"
FORMAT_VERSION = 1


def save_model(
    directory: Path, model: LabelerModel, spec: BackboneSpec, classes: Sequence[str], info: dict[str, Any],
    head_state: dict[str, torch.Tensor], *, shown: Path | None = None,
) -> None:
    """Write the three model files into ``directory`` (which must exist and be empty).

    Everything is serialised in memory first, so the free space is checked before the first
    byte is written and a full disk is a :class:`~labeltool.io.disk_space.NoSpaceError` naming
    ``shown`` (default ``directory``), never an error inside the TorchScript writer."""
    model = model.cpu().eval()
    example = torch.zeros(2, 3, spec.input_size, spec.input_size)
    with torch.inference_mode(), _quiet_torchscript():
        traced = torch.jit.trace(model, example, check_trace=False)
    files = {
        TORCHSCRIPT: bytes(traced.save_to_buffer()),
        HEAD_WEIGHTS: safetensors_bytes(head_state),
        MODEL_JSON: json.dumps(_model_meta(spec, classes, info), indent=2, sort_keys=True).encode(),
    }
    ensure_free_space(directory, sum(len(b) for b in files.values()), shown or directory)
    for name, data in files.items():
        write_file(directory / name, data, shown or directory)


@contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """Hide torch's notices that TorchScript is deprecated (the exported format stays TorchScript)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        yield


def _model_meta(spec: BackboneSpec, classes: Sequence[str], info: dict[str, Any]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "backbone": spec.to_json(),
        "preprocessing": {
            "resize_short_side": spec.input_size, "interpolation": "bicubic", "center_crop": spec.input_size,
            "scale": "uint8 / 255", "mean": list(spec.mean), "std": list(spec.std), "color": "RGB",
        },
        "classes": list(classes),
        "input": f"float32 [B, 3, {spec.input_size}, {spec.input_size}] after preprocessing",
        "output": f"float32 [B, {len(classes)}] class probabilities",
        "torch_version": torch.__version__,
        **info,
    }


@dataclass
class Prediction:
    """Predicted class name per image and the full probability matrix ``[n, C]``."""

    classes: list[str]
    probabilities: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


class ExportedModel:
    """A model folder loaded for inference."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        meta_path = self.dir / MODEL_JSON
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.dir} is not an exported labeltool model (no {MODEL_JSON})")
        self.meta = json.loads(meta_path.read_text())
        if int(self.meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{self.dir} was exported by a newer labeltool; upgrade to load it")
        self.class_names: list[str] = list(self.meta["classes"])
        b = self.meta["backbone"]
        self.spec = BackboneSpec(
            name=b["name"], description="", input_size=int(b["input_size"]), mean=rgb_triple(b["mean"]),
            std=rgb_triple(b["std"]), feature_dim=int(b.get("feature_dim", 0)), license=b.get("license", ""),
        )
        with _quiet_torchscript():
            self.module = torch.jit.load(str(self.dir / TORCHSCRIPT), map_location="cpu").eval()
        self._preprocess = make_preprocess(self.spec)

    def preprocess(self, images: Sequence[str | Path | Image.Image | np.ndarray]) -> torch.Tensor:
        """Images (paths, PIL images or HxWx3 uint8 arrays) → ``[B, 3, S, S]``."""
        tensors = []
        for im in images:
            if isinstance(im, (str, Path)):
                pil = load_image(im)
            elif isinstance(im, np.ndarray):
                pil = Image.fromarray(im).convert("RGB")
            else:
                pil = im.convert("RGB")
            tensors.append(self._preprocess(pil))
        return torch.stack(tensors)

    @torch.inference_mode()
    def predict(self, images: Sequence[str | Path | Image.Image | np.ndarray], batch_size: int = 32) -> Prediction:
        """Class names and probabilities for ``images``."""
        if len(images) == 0:
            return Prediction([], np.zeros((0, len(self.class_names)), dtype=np.float32))
        probs = []
        for s in range(0, len(images), batch_size):
            probs.append(self.module(self.preprocess(images[s : s + batch_size])).float().numpy())
        p = np.concatenate(probs)
        return Prediction([self.class_names[i] for i in p.argmax(1)], p)


def load_model(path: str | Path) -> ExportedModel:
    """Load an exported model folder (or the export root that contains ``model/``)."""
    p = Path(path)
    if not (p / MODEL_JSON).exists() and (p / "model" / MODEL_JSON).exists():
        p = p / "model"
    return ExportedModel(p)

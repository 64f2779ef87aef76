"""Exported models: save backbone + head + classifier through ``torch.export`` and as ONNX with a
JSON description, and load either back with :func:`load_model` for prediction (no labeltool
state needed; the ONNX file runs without labeltool or PyTorch, see ``docs/predict_onnx.py``).

Folder layout (format 2)::

    model.json          backbone, exact preprocessing, input/output names and shapes, class names, loss, round
    head.safetensors    projection head + loss parameters (to continue training in labeltool)
    model.pt2           torch.export program: preprocessed images [B, 3, S, S] -> probabilities [B, C]
    model.onnx          the same network as ONNX (input "images", output "probabilities", B dynamic)

Format 1 folders (``model.torchscript.pt`` instead of the two network files) still load.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save as safetensors_bytes

from labeltool.data.decode import load_image
from labeltool.io.disk_space import ensure_free_space, write_file
from labeltool.io.model_runtimes import (
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    TORCH_EXPORT,
    choose_model_file,
)
from labeltool.models.backbones import BackboneSpec, make_preprocess, rgb_triple
from labeltool.models.heads import LabelerModel
from labeltool.models.onnx_export import OPSET, onnx_model_bytes

MODEL_JSON = "model.json"
HEAD_WEIGHTS = "head.safetensors"
FORMAT_VERSION = 2
NETWORK_FILES = (TORCH_EXPORT, ONNX_FILE)


def save_model(
    directory: Path, model: LabelerModel, spec: BackboneSpec, classes: Sequence[str], info: dict[str, Any],
    head_state: dict[str, torch.Tensor], *, shown: Path | None = None,
) -> None:
    """Write the four model files into ``directory`` (which must exist and be empty).

    Everything is serialised in memory first, so the free space is checked before the first
    byte is written and a full disk is a :class:`~labeltool.io.disk_space.NoSpaceError` naming
    ``shown`` (default ``directory``), never an error inside a writer; space for the weights is
    checked before serialising too, so a disk that cannot hold them fails at once. ``model`` is moved to the
    CPU and left in eval mode."""
    model = model.cpu().eval()
    # model.pt2 alone holds every weight: a full disk is told before the export's seconds of work
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    ensure_free_space(directory, weights, shown or directory, at_least=True)
    example = torch.zeros(2, 3, spec.input_size, spec.input_size)
    program = exported_program(model, example)  # captured once, for both files
    files = {
        TORCH_EXPORT: program_bytes(program),
        ONNX_FILE: onnx_model_bytes(program, example, input_name=INPUT_NAME, output_name=OUTPUT_NAME),
        HEAD_WEIGHTS: safetensors_bytes(head_state),
        MODEL_JSON: json.dumps(model_meta(spec, classes, info), indent=2, sort_keys=True).encode(),
    }
    ensure_free_space(directory, sum(len(b) for b in files.values()), shown or directory)
    for name, data in files.items():
        write_file(directory / name, data, shown or directory)


def exported_program(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``model``'s graph for inputs shaped like ``example [B, ...]``, the batch dimension dynamic
    (every other one fixed to ``example``'s)."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def torch_export_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """``torch.export.save`` archive of ``model`` (see :func:`exported_program`)."""
    return program_bytes(exported_program(model, example))


def program_bytes(program: torch.export.ExportedProgram) -> bytes:
    """``torch.export.save`` archive of ``program``."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def model_meta(spec: BackboneSpec, classes: Sequence[str], info: dict[str, Any]) -> dict[str, Any]:
    """The ``model.json`` of a format 2 folder (``info``: round, loss, ... saved beside)."""
    side = spec.input_size
    return {
        **info,
        "format_version": FORMAT_VERSION,
        "backbone": spec.to_json(),
        "classes": list(classes),
        "files": {"torch_export": TORCH_EXPORT, "onnx": ONNX_FILE, "head": HEAD_WEIGHTS},
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", 3, side, side],
                  "layout": "NCHW: image, channel (R, G, B), row (top first), column (left first)"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", len(classes)],
                   "meaning": "class probabilities (softmax, rows sum to 1); column i is classes[i]"},
        "preprocessing": preprocessing_meta(spec),
        "onnx_opset": OPSET,
        "torch_version": torch.__version__,
    }


def preprocessing_meta(spec: BackboneSpec) -> dict[str, Any]:
    """How an image file becomes one ``[3, S, S]`` row of the network's input, step by step
    (what :func:`~labeltool.models.backbones.make_preprocess` after ``load_image`` does)."""
    side = spec.input_size
    return {
        "steps": ["decode", "crop", "resize", "scale", "normalize"],
        "decode": ("first frame; transparency (alpha or a palette's transparent colour) composited over white; "
                   "16-bit integer grayscale scaled by its bit depth (TIFF BitsPerSample, else 16) to 0..255 "
                   "(other integer data stretched min..max), float grayscale in [0, 1] times 255 (else stretched "
                   "min..max), rounded; converted to 8-bit "
                   "RGB (grayscale repeated in R, G, B); then the EXIF orientation applied"),
        "crop": {"shape": "centre square", "side": "min(width, height)", "left": "(width - side) // 2",
                 "top": "(height - side) // 2"},
        "resize": {"width": side, "height": side, "interpolation": "bicubic", "antialias": True,
                   "result": "uint8, rounded", "pillow": f"square.resize(({side}, {side}), Image.Resampling.BICUBIC)",
                   "note": ("labeltool resizes with torchvision's antialiased bicubic on uint8, which equals "
                            "Pillow's BICUBIC up to 2 levels on under 1% of the pixels")},
        "scale": "float32 value / 255",
        "normalize": {"mean": list(spec.mean), "std": list(spec.std), "formula": "(value - mean[c]) / std[c]",
                      "channels": "R, G, B"},
        "color": "RGB",
        "grayscale_network": spec.grayscale,
        "grayscale_note": ("the network itself averages the three normalised channels, so it is fed RGB "
                           "like every other one") if spec.grayscale else "",
    }


@dataclass
class Prediction:
    """Predicted class name per image and the full probability matrix ``[n, C]``."""

    classes: list[str]
    probabilities: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


def read_model_meta(directory: Path) -> dict[str, Any]:
    """The validated ``model.json`` of a model folder (format 1 or 2)."""
    path = directory / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not an exported labeltool model (no {MODEL_JSON})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); export the model again") from None
    missing = [k for k in ("classes", "backbone") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; export the model again")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{directory} was exported by a newer labeltool (format {version}); upgrade to load it")
    return meta


def _spec_from_meta(b: dict[str, Any]) -> BackboneSpec:
    return BackboneSpec(
        name=b["name"], description="", input_size=int(b["input_size"]), mean=rgb_triple(b["mean"]),
        std=rgb_triple(b["std"]), feature_dim=int(b.get("feature_dim", 0)), license=b.get("license", ""),
        grayscale=bool(b.get("grayscale", False)),
    )


Images = Sequence[str | Path | Image.Image | np.ndarray]


class ExportedModel:
    """A model folder loaded for inference with ``runtime`` ``auto``, ``torch`` or ``onnx``
    (see :func:`~labeltool.io.model_runtimes.choose_model_file`); ``self.runtime`` and
    ``self.model_file`` say which file runs."""

    def __init__(self, directory: str | Path, runtime: str = "auto") -> None:
        self.dir = Path(directory)
        self.meta = read_model_meta(self.dir)
        self.class_names: list[str] = list(self.meta["classes"])
        self.spec = _spec_from_meta(self.meta["backbone"])
        chosen = choose_model_file(self.dir, runtime)
        self.runtime, self.model_file = chosen.runtime, self.dir / chosen.name
        self._run = chosen.load(self.model_file)
        self._preprocess = make_preprocess(self.spec)

    def preprocess(self, images: Images) -> torch.Tensor:
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

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities ``[B, C]`` of preprocessed images ``[B, 3, S, S]`` float32."""
        return self._run(batch)

    def predict(self, images: Images, batch_size: int = 32) -> Prediction:
        """Class names and probabilities for ``images``."""
        if len(images) == 0:
            return Prediction([], np.zeros((0, len(self.class_names)), dtype=np.float32))
        probs = [self._run(self.preprocess(images[s : s + batch_size]).numpy())
                 for s in range(0, len(images), batch_size)]
        p = np.concatenate(probs)
        return Prediction([self.class_names[i] for i in p.argmax(1)], p)


def load_model(path: str | Path, runtime: str = "auto") -> ExportedModel:
    """Load an exported model folder (or the export root that contains ``model/``) to run with
    ``runtime``: ``auto`` (``model.pt2`` through PyTorch when present, else ``model.onnx``
    through ONNX Runtime), ``torch`` or ``onnx``."""
    p = Path(path)
    if not (p / MODEL_JSON).exists() and (p / "model" / MODEL_JSON).exists():
        p = p / "model"
    return ExportedModel(p, runtime)

"""Runtimes that run the network of an exported model folder (registry of model files).

Each :class:`ModelFile` is one file a folder may hold and the runtime that runs it; loaded, it is
a :data:`ModelFn`: preprocessed images ``[B, 3, S, S]`` float32 → class probabilities ``[B, C]``
float32. Format 2 folders hold ``model.pt2`` (``torch.export``, runtime ``torch``) and
``model.onnx`` (runtime ``onnx``, ONNX Runtime); format 1 folders hold only the TorchScript
``model.torchscript.pt``, still read by runtime ``torch``.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ModelFn = Callable[[np.ndarray], np.ndarray]
"""Preprocessed images ``[B, 3, S, S]`` float32 → class probabilities ``[B, C]`` float32."""

TORCH_EXPORT = "model.pt2"
ONNX_FILE = "model.onnx"
LEGACY_TORCHSCRIPT = "model.torchscript.pt"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
RUNTIMES = ("auto", "torch", "onnx")
"""Accepted ``runtime`` values; ``auto`` takes the first file of :data:`MODEL_FILES` present."""


@dataclass(frozen=True)
class ModelFile:
    """A network file of a model folder: its name, the runtime that runs it, the Python package
    that runtime needs and ``load(path) -> ModelFn``."""

    name: str
    runtime: str
    package: str
    load: Callable[[Path], ModelFn]


MODEL_FILES: list[ModelFile] = []
"""Registered files, in the order ``auto`` (and a runtime with two files) tries them."""


def register_model_file(entry: ModelFile) -> ModelFile:
    if entry.runtime not in RUNTIMES or entry.runtime == "auto":
        raise ValueError(f"model file {entry.name!r}: runtime must be one of {', '.join(RUNTIMES[1:])}")
    if any(f.name == entry.name for f in MODEL_FILES):
        raise ValueError(f"model file {entry.name!r} is registered twice")
    MODEL_FILES.append(entry)
    return entry


def _torch_fn(module: Callable[[torch.Tensor], torch.Tensor]) -> ModelFn:
    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).float().numpy()

    return run


def _load_torch_export(path: Path) -> ModelFn:
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # a damaged file or one of an incompatible PyTorch: many error types
        raise ValueError(
            f"{path} cannot be read by PyTorch {torch.__version__} ({type(e).__name__}: {e}); load the folder "
            "with runtime='onnx' (model.onnx does not depend on the PyTorch version) or export the model again"
        ) from e
    return _torch_fn(program.module())


def _load_onnx(path: Path) -> ModelFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ONNX Runtime's notices are not the caller's concern
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        raise ValueError(f"{path} cannot be read by ONNX Runtime {ort.__version__} ({e}); export the model again") from e
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        out = session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32)

    return run


def _load_legacy_torchscript(path: Path) -> ModelFn:
    with warnings.catch_warnings():
        # format 1 folders are TorchScript; torch deprecates torch.jit.load, which is all this reads
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()
    return _torch_fn(module)


register_model_file(ModelFile(TORCH_EXPORT, "torch", "torch", _load_torch_export))
register_model_file(ModelFile(ONNX_FILE, "onnx", "onnxruntime", _load_onnx))
register_model_file(ModelFile(LEGACY_TORCHSCRIPT, "torch", "torch", _load_legacy_torchscript))


def choose_model_file(directory: Path, runtime: str) -> ModelFile:
    """The file of ``directory`` that ``runtime`` (``auto``, ``torch`` or ``onnx``) runs.

    ``auto``: the first registered file present (``model.pt2``, else ``model.onnx``, else a
    format 1 TorchScript). Raises ``ValueError`` for an unknown runtime, ``FileNotFoundError``
    when no file of that runtime is there and ``ModuleNotFoundError`` when its package is not
    installed, each saying what to do."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown model runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    wanted = [f for f in MODEL_FILES if runtime in ("auto", f.runtime)]
    present = [f for f in wanted if (directory / f.name).is_file()]
    if not present:
        looked = ", ".join(f.name for f in wanted)
        have = ", ".join(f.name for f in MODEL_FILES if (directory / f.name).is_file())
        hint = (f"it holds {have} (runtime='auto' loads it); export the model again to get {looked}" if have
                else "export the model again")
        raise FileNotFoundError(f"{directory} has no model file for runtime {runtime!r} (looked for {looked}); {hint}")
    chosen = present[0]
    if importlib.util.find_spec(chosen.package) is None:
        raise ModuleNotFoundError(
            f"runtime {chosen.runtime!r} needs the Python package {chosen.package!r} to run {directory / chosen.name}; "
            f"install it (pip install {chosen.package}) or choose another runtime")
    return chosen

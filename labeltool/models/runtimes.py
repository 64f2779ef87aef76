"""Inference runtimes for feature extraction: PyTorch eager, or an exported ONNX file run by
OpenVINO or ONNX Runtime (registry).

On a CPU an inference runtime runs the same backbone several times faster than PyTorch eager
(benchmarks/README.md §3), so ``auto`` picks the first installed of :data:`CPU_PREFERENCE` there;
on a GPU, and for training, PyTorch stays the path. The ONNX file is written once per backbone
(keyed by its feature-cache key and the opset) through :mod:`labeltool.models.onnx_export` and
reused by later runs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labeltool.models.backbones import Backbone
from labeltool.models.onnx_export import OPSET, write_onnx

FeatureFn = Callable[[np.ndarray], np.ndarray]
"""Preprocessed images ``[B, 3, S, S]`` float32 → features ``[B, D]`` float32."""

INPUT_NAME = "images"
OUTPUT_NAME = "features"


@dataclass(frozen=True)
class Runtime:
    """An inference runtime that runs an exported ONNX backbone.

    ``module`` is the Python package it needs; ``load(onnx_path, threads)`` returns the feature
    function of that file, using at most ``threads`` CPU threads.
    """

    name: str
    module: str
    description: str
    load: Callable[[Path, int], FeatureFn]

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


RUNTIMES: dict[str, Runtime] = {}
CPU_PREFERENCE: tuple[str, ...] = ("openvino", "onnxruntime")
"""Tried in this order by ``auto`` on a CPU (fastest first, measured on x86 with and without AMX)."""


def register_runtime(runtime: Runtime) -> Runtime:
    if runtime.name in RUNTIMES or runtime.name == "torch":
        raise ValueError(f"runtime {runtime.name!r} is registered twice")
    RUNTIMES[runtime.name] = runtime
    return runtime


def runtime_names() -> list[str]:
    """Every accepted value of a runtime setting: ``auto``, ``torch`` and the registered ones."""
    return ["auto", "torch", *RUNTIMES]


def resolve_runtime(name: str, device: torch.device) -> str:
    """The runtime to extract with: ``torch`` or a registered one that is installed.

    ``auto`` → ``torch`` on a GPU, else the first installed of :data:`CPU_PREFERENCE` (``torch``
    when none is). An explicit runtime that is unknown, not installed or asked for on a GPU is a
    ``ValueError`` saying what to do.
    """
    if name == "torch":
        return name
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        return next((n for n in CPU_PREFERENCE if n in RUNTIMES and RUNTIMES[n].installed()), "torch")
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(runtime_names())}")
    if device.type != "cpu":
        raise ValueError(f"runtime {name!r} runs on the CPU only; use --runtime torch (or auto) on {device}")
    if not RUNTIMES[name].installed():
        raise ValueError(f"runtime {name!r} needs the {RUNTIMES[name].module} package: "
                         f"pip install {RUNTIMES[name].module} (or use --runtime auto)")
    return name


def onnx_file(directory: Path, key: str) -> Path:
    """Where the exported backbone of feature-cache key ``key`` is kept in ``directory``."""
    return directory / f"{key}-opset{OPSET}.onnx"


def exported_backbone(backbone: Backbone, directory: Path, key: str) -> Path:
    """The backbone's ONNX file in ``directory``, exported now if it is not there yet.

    The file maps preprocessed images ``[B, 3, S, S]`` (B dynamic) to features ``[B, D]``.
    """
    path = onnx_file(directory, key)
    if not path.exists():
        size = backbone.spec.input_size
        write_onnx(backbone, torch.zeros(2, 3, size, size), path, input_name=INPUT_NAME, output_name=OUTPUT_NAME)
    return path


def load_features_fn(runtime: str, onnx_path: Path, threads: int) -> FeatureFn:
    """The feature function of ``onnx_path`` under a registered ``runtime``."""
    return RUNTIMES[runtime].load(onnx_path, max(1, threads))


def _load_onnxruntime(path: Path, threads: int) -> FeatureFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0],
                          dtype=np.float32)

    return run


def _openvino_loader(precision: str) -> Callable[[Path, int], FeatureFn]:
    """OpenVINO on the CPU computing in ``precision`` (``f32``, or ``bf16`` where the CPU has it)."""

    def load(path: Path, threads: int) -> FeatureFn:
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                              "INFERENCE_PRECISION_HINT": precision})
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            out = request.infer({0: np.ascontiguousarray(x, np.float32)})
            return np.array(next(iter(out.values())), dtype=np.float32)

        return run

    return load


# f32: the features of PyTorch (cosine > 0.9999). bf16 (AMX / AVX-512 BF16 CPUs) is about twice
# as fast again but not exact enough to be the default: EfficientNet-Lite2's features fell to
# cosine 0.987 of PyTorch's on the sample's photos (benchmarks/README.md §3); pick it by hand.
register_runtime(Runtime("openvino", "openvino", "OpenVINO (Intel), CPU, float32", _openvino_loader("f32")))
register_runtime(Runtime("openvino_bf16", "openvino", "OpenVINO, CPU, bfloat16 where the CPU has it",
                         _openvino_loader("bf16")))
register_runtime(Runtime("onnxruntime", "onnxruntime", "ONNX Runtime, CPU execution provider", _load_onnxruntime))

"""Export a module to ONNX through ``torch.export`` (the dynamo exporter), batch size dynamic.

The graph is captured by ``torch.export`` rather than ``torch.jit.trace``, so no deprecated path is
involved and the same file runs in ONNX Runtime, OpenVINO or any other ONNX consumer.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

OPSET = 18


def onnx_model_bytes(module: nn.Module | torch.export.ExportedProgram, example: Tensor, *,
                     input_name: str = "images", output_name: str = "output") -> bytes:
    """Serialised ONNX model of ``module`` for inputs shaped like ``example [B, ...]``.

    Only the first dimension (the batch) is dynamic; every other one is fixed to ``example``'s.
    ``module`` is exported on the CPU in eval mode (it is left in eval mode on the CPU). An
    ``ExportedProgram`` (``torch.export.export`` with the batch dynamic, on the CPU) is converted
    as it is, without capturing the graph a second time.
    """
    model: nn.Module | torch.export.ExportedProgram = module
    shapes = None
    if isinstance(module, nn.Module):
        model, shapes = module.cpu().eval(), ({0: torch.export.Dim("batch", min=1)},)
    with warnings.catch_warnings(), torch.no_grad():
        # the exporter reports its own progress through warnings and prints; neither concerns the caller
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example.cpu(),), input_names=[input_name], output_names=[output_name],
            dynamic_shapes=shapes, dynamo=True, optimize=True, opset_version=OPSET, verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns its program
        raise RuntimeError("torch.onnx.export returned no program")
    return bytes(program.model_proto.SerializeToString())


def write_onnx(module: nn.Module, example: Tensor, path: Path, *, input_name: str = "images",
               output_name: str = "output") -> Path:
    """Export ``module`` (see :func:`onnx_model_bytes`) to ``path`` atomically; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)  # an unwritable place fails before the export's cost
    data = onnx_model_bytes(module, example, input_name=input_name, output_name=output_name)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path

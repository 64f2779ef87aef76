"""The exported model: export time and file sizes, and prediction speed through PyTorch
(``model.pt2``) against ONNX Runtime (``model.onnx``), on this machine's CPU.

    python benchmarks/bench_model_export.py                       # efficientnet_lite0, 224 px
    python benchmarks/bench_model_export.py --size 64 --repeats 3 --images 16   # quicker

The model is what a round exports (backbone + projection head + cross-entropy classifier, here
with an untrained head: speed does not depend on the weights). Export: each file's bytes built
once (the TorchScript trace of format 1 beside them for comparison), wall and CPU seconds.
Predict: the same random preprocessed batch through each runtime (network only), then
``ExportedModel.predict`` on image files of sample_data/ (decode + preprocess + network),
the runtimes alternating in each repeat; min and median seconds, images/s of the median.
Writes benchmarks/results/model_export.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import REPO, environment, md_table, set_threads, write_json

from labeltool.io.model_io import ONNX_FILE, TORCH_EXPORT, load_model, save_model, torch_export_bytes
from labeltool.losses import create_loss
from labeltool.models.backbones import DEFAULT_BACKBONE, create_backbone
from labeltool.models.heads import LabelerModel, LossLogits, ProjectionHead
from labeltool.models.onnx_export import onnx_model_bytes

CLASSES = 10


def build_model(backbone: str, size: int) -> tuple[LabelerModel, Any]:
    torch.manual_seed(0)
    bb = create_backbone(backbone, image_size=size)
    head = ProjectionHead(bb.spec.feature_dim, 64).eval()
    loss = create_loss("cross_entropy", num_classes=CLASSES, embedding_dim=64)
    return LabelerModel(bb, head, LossLogits(loss)).eval(), bb.spec


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds and this process's CPU seconds (all threads)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def torchscript_bytes(model: LabelerModel, example: torch.Tensor) -> bytes:
    """What format 1 wrote (for comparison only)."""
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", FutureWarning)
        return bytes(torch.jit.trace(model, example, check_trace=False).save_to_buffer())


def onnx_from_program_bytes(model: LabelerModel, example: torch.Tensor) -> bytes:
    """ONNX converted from an ``ExportedProgram`` already made (the .pt2's), which spares the
    exporter its own ``torch.export`` (measured as the alternative; labeltool does not do this)."""
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(program, input_names=["images"], output_names=["probabilities"],
                                         dynamo=True, optimize=True, opset_version=18)
    assert onnx_program is not None
    return bytes(onnx_program.model_proto.SerializeToString())


def bench_export(model: LabelerModel, size: int) -> list[dict[str, Any]]:
    example = torch.zeros(2, 3, size, size)
    rows = []
    for name, fn in (("model.torchscript.pt (format 1, jit.trace)", torchscript_bytes),
                     (f"{TORCH_EXPORT} (torch.export)", torch_export_bytes),
                     (f"{ONNX_FILE} (dynamo ONNX exporter)", lambda m, x: onnx_model_bytes(
                         m, x, input_name="images", output_name="probabilities")),
                     ("model.onnx from a made ExportedProgram (alternative, includes its torch.export)",
                      onnx_from_program_bytes)):
        data, wall, cpu = timed(lambda fn=fn: fn(model, example))
        rows.append({"file": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "mb": round(len(data) / 1e6, 2)})
        print(rows[-1], flush=True)
    return rows


def _stats(times: list[float], n: int) -> dict[str, float]:
    med = statistics.median(times)
    return {"min_s": round(min(times), 4), "median_s": round(med, 4), "images_per_s": round(n / med, 2)}


def bench_predict(folder: Path, size: int, batch: int, images: list[Path], repeats: int) -> dict[str, Any]:
    models, load = {}, {}
    for rt in ("torch", "onnx"):
        models[rt], load[rt], _ = timed(lambda rt=rt: load_model(folder, runtime=rt))
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    ref = models["torch"].probabilities(x)
    diff = float(np.abs(models["onnx"].probabilities(x) - ref).max())
    net: dict[str, list[float]] = {"torch": [], "onnx": []}
    e2e: dict[str, list[float]] = {"torch": [], "onnx": []}
    for r in range(repeats):
        order = ("torch", "onnx") if r % 2 == 0 else ("onnx", "torch")
        for rt in order:
            net[rt].append(timed(lambda rt=rt: models[rt].probabilities(x))[1])
        for rt in order:
            e2e[rt].append(timed(lambda rt=rt: models[rt].predict(images, batch_size=batch))[1])
    out: dict[str, Any] = {"load_s": {k: round(v, 2) for k, v in load.items()}, "max_abs_prob_diff": diff}
    for rt in ("torch", "onnx"):
        out[f"network_{rt}"] = _stats(net[rt], batch)
        out[f"predict_{rt}"] = _stats(e2e[rt], len(images))
    out["network_speedup_onnx_over_torch"] = round(out["network_torch"]["median_s"] / out["network_onnx"]["median_s"], 2)
    out["predict_speedup_onnx_over_torch"] = round(out["predict_torch"]["median_s"] / out["predict_onnx"]["median_s"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default=DEFAULT_BACKBONE)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=64, help="sample_data files for the end-to-end predict")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (ONNX Runtime: its default)")
    ap.add_argument("--name", default="model_export")
    args = ap.parse_args()
    set_threads(args.threads)
    env = environment("cpu")
    print("load average at start", env["load_average"], flush=True)
    model, spec = build_model(args.backbone, args.size)
    export_rows = bench_export(model, args.size)
    images = sorted((REPO / "sample_data").glob("*/*.png"))[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        _, wall, cpu = timed(lambda: save_model(Path(tmp), model, spec, [f"c{i}" for i in range(CLASSES)], {}, {}))
        predict = bench_predict(Path(tmp), args.size, args.batch, images, args.repeats)
    result = {"environment": env, "args": vars(args), "export": export_rows,
              "save_model": {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}, "predict": predict}
    print(md_table(["file", "wall s", "CPU s", "MB"], [[r["file"], r["wall_s"], r["cpu_s"], r["mb"]] for r in export_rows]))
    print(predict)
    print("wrote", write_json(args.name, result))


if __name__ == "__main__":
    main()

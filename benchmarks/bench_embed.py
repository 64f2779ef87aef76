"""Embedding throughput per runtime, side by side in one run: JPEG decoding alone, the backbone
alone and end to end (images/s), PyTorch eager against the inference runtimes, and how close
each runtime's features are to PyTorch's.

    python benchmarks/bench_embed.py                        # every installed backbone, sample_data/
    python benchmarks/bench_embed.py --backbones efficientnet_lite0 --images 512 --repeats 5 --int8
    python benchmarks/bench_embed.py --device cuda --batch-size 128 --workers 12 --runtimes torch

Images: the real photos of ``--folder`` (default sample_data/, cycled to ``--images``), or
synthetic 256x256 JPEGs with ``--synthetic``. Per backbone:

- the export to ONNX (through torch.export) is timed once, as the session does it;
- features of the first 64 images by every runtime are compared with PyTorch's (cosine, min/mean);
- the model alone runs on one preprocessed batch, the runtimes alternating ``--repeats`` times
  (median images/s); end to end (``iter_features``: decode in ``--workers`` processes + model) each
  runtime reads every image once per repeat, in a rotating order;
- with ``--int8``, ONNX Runtime's static int8 quantization (QDQ, per channel, calibrated on 32 of
  the images) is measured the same way, to see whether it holds the features.

Writes benchmarks/results/embed_runtimes_<device>.json (or ``--name``); ``report.py`` renders it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import _version, environment, write_json  # noqa: E402

from labeltool.data.scan import load_image  # noqa: E402
from labeltool.models.backbones import (  # noqa: E402
    Backbone,
    create_backbone,
    is_installed,
    list_backbones,
    make_preprocess,
)
from labeltool.models.extract import RuntimeChoice, features_fn, iter_features, pick_device  # noqa: E402
from labeltool.models.runtimes import RUNTIMES, exported_backbone, onnx_file  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
COSINE_IMAGES = 64


def synthetic_images(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    """``n`` smooth-noise JPEGs of ``size`` px (quality 90)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        p = folder / f"{i:06d}.jpg"
        Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(p, quality=90)
        paths.append(p)
    return paths


def folder_images(folder: Path, n: int) -> list[Path]:
    """The first ``n`` images under ``folder`` (cycled when it holds fewer)."""
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise SystemExit(f"no images under {folder}")
    return [found[i % len(found)] for i in range(n)]


def decode_rate(paths: list[Path], preprocess) -> float:  # noqa: ANN001
    t = time.perf_counter()
    for p in paths:
        preprocess(load_image(p))
    return len(paths) / (time.perf_counter() - t)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def quantized_int8(fp32: Path, batch: np.ndarray, out: Path) -> Path:
    """ONNX Runtime static int8 quantization of ``fp32`` calibrated on ``batch [N, 3, S, S]``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": batch[i : i + 8]} for i in range(0, len(batch), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    pre = out.with_name("pre_" + out.name)
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return out


def model_rates(fns: dict[str, object], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median images/s of each feature function on ``x``, the functions alternating."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn(x)  # type: ignore[operator]  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(x)  # type: ignore[operator]
            times[name].append(time.perf_counter() - t)
    return {name: len(x) / statistics.median(ts) for name, ts in times.items()}


def end_to_end_rates(backbone: Backbone, choices: dict[str, RuntimeChoice], paths: list[Path], args: argparse.Namespace,
                     device: torch.device) -> dict[str, float]:
    """Median images/s of ``iter_features`` per runtime over ``paths``, the order rotating."""
    times: dict[str, list[float]] = {name: [] for name in choices}
    names = list(choices)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t = time.perf_counter()
            for _ in iter_features(backbone, paths, batch_size=args.batch_size, device=device,
                                   num_workers=args.workers, runtime=choices[name]):
                pass
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return {name: len(paths) / statistics.median(ts) for name, ts in times.items()}


def bench_backbone(name: str, paths: list[Path], args: argparse.Namespace, device: torch.device,
                   tmp: Path) -> list[dict[str, object]]:
    backbone = create_backbone(name)
    spec = backbone.spec
    pre = make_preprocess(spec)
    decode = decode_rate(paths[: min(len(paths), 128)], pre)
    runtimes = [r for r in args.runtimes if r == "torch" or (r in RUNTIMES and RUNTIMES[r].installed())]
    t = time.perf_counter()
    if any(r != "torch" for r in runtimes):
        exported_backbone(backbone, tmp, spec.cache_key())
    export_s = time.perf_counter() - t
    choices = {r: RuntimeChoice(r, tmp, spec.cache_key()) if r != "torch" else RuntimeChoice() for r in runtimes}
    fns = {r: features_fn(backbone, device, c) for r, c in choices.items()}
    real = torch.stack([pre(load_image(p)) for p in paths[:COSINE_IMAGES]])
    if args.int8:
        q = quantized_int8(onnx_file(tmp, spec.cache_key()), real[:32].numpy(), tmp / f"{name}_int8.onnx")
        from labeltool.models.runtimes import load_features_fn

        run = load_features_fn("onnxruntime", q, torch.get_num_threads())
        fns["onnxruntime int8"] = lambda x, run=run: run(x.numpy())
    reference = fns["torch"](real) if "torch" in fns else None
    model = model_rates(fns, real[: args.batch_size], args.repeats)
    e2e = end_to_end_rates(backbone, choices, paths, args, device)
    rows: list[dict[str, object]] = []
    for r, fn in fns.items():
        c = cosines(fn(real), reference) if reference is not None else np.array([np.nan])
        rows.append({"backbone": name, "input_px": spec.input_size, "runtime": r, "decode_img_s_1proc": round(decode, 1),
                     "model_img_s": round(model[r], 1), "end_to_end_img_s": round(e2e[r], 1) if r in e2e else None,
                     "cosine_min": round(float(c.min()), 5), "cosine_mean": round(float(c.mean()), 5),
                     "export_s": round(export_s, 1) if r != "torch" else None})
    for row in rows:
        base = next((x for x in rows if x["runtime"] == "torch"), None)
        if base is not None:
            row["model_x_torch"] = round(float(row["model_img_s"]) / float(base["model_img_s"]), 2)  # type: ignore[arg-type]
            if row["end_to_end_img_s"] is not None:
                row["end_to_end_x_torch"] = round(float(row["end_to_end_img_s"]) / float(base["end_to_end_img_s"]), 2)  # type: ignore[arg-type]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="*", default=None)
    ap.add_argument("--runtimes", nargs="*", default=["torch", *RUNTIMES])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--folder", default=str(Path(__file__).resolve().parents[1] / "sample_data"))
    ap.add_argument("--synthetic", action="store_true", help="synthetic 256 px JPEGs instead of --folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="decoding processes (the session's default here: 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch / runtime threads (default: all cores)")
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    info = environment(device.type)
    info["runtime_versions"] = {r: _version(RUNTIMES[r].module) for r in RUNTIMES if RUNTIMES[r].installed()}
    names = args.backbones or [b for b in list_backbones() if is_installed(b) and create_backbone(b).spec.pretrained]
    with tempfile.TemporaryDirectory() as tmp:
        paths = (synthetic_images(Path(tmp), args.images, 256, args.seed) if args.synthetic
                 else folder_images(Path(args.folder), args.images))
        rows = [row for name in names for row in bench_backbone(name, paths, args, device, Path(tmp))]
    print(f"{'backbone':20s} {'px':>4s} {'runtime':>17s} {'decode/1':>9s} {'model':>8s} {'x':>5s} "
          f"{'end-to-end':>11s} {'x':>5s} {'cos min':>8s}")
    for r in rows:
        e2e = "-" if r["end_to_end_img_s"] is None else f"{r['end_to_end_img_s']:11.1f}"
        print(f"{r['backbone']:20s} {r['input_px']:4d} {r['runtime']:>17s} {r['decode_img_s_1proc']:9.1f} "
              f"{r['model_img_s']:8.1f} {r.get('model_x_torch', 0):5.2f} {e2e:>11s} "
              f"{r.get('end_to_end_x_torch', 0) or 0:5.2f} {r['cosine_min']:8.5f}")
    result = {**info, "images": len(paths),
              "source": "synthetic" if args.synthetic else args.folder, "batch_size": args.batch_size,
              "workers": args.workers, "repeats": args.repeats, "rows": rows}
    print(f"wrote {write_json(args.name or f'embed_runtimes_{device.type}', result)}")


if __name__ == "__main__":
    main()

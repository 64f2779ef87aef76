"""Embedding throughput: JPEG decoding alone, the backbone alone, and end to end (images/s).

    python benchmarks/bench_embed.py --images 512 --device cpu
    python benchmarks/bench_embed.py --images 4096 --device cuda --batch-size 128 --workers 12

Images are synthetic 256x256 JPEGs (smooth noise, quality 90) written to a temporary folder,
unless --folder points at real ones. Prints a table and writes benchmarks/results/embed_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labeltool.data.scan import load_image  # noqa: E402
from labeltool.models.backbones import create_backbone, is_installed, list_backbones, make_preprocess  # noqa: E402
from labeltool.models.extract import iter_features, pick_device  # noqa: E402


def make_images(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        p = folder / f"{i:06d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


def bench_decode(paths: list[Path], preprocess) -> float:  # noqa: ANN001
    t = time.perf_counter()
    for p in paths:
        preprocess(load_image(p))
    return len(paths) / (time.perf_counter() - t)


def bench_model(backbone, size: int, n: int, batch: int, device: torch.device) -> float:  # noqa: ANN001
    model = backbone.to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    steps = max(1, n // batch)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        model(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def bench_end_to_end(backbone, paths: list[Path], batch: int, device: torch.device, workers: int) -> float:  # noqa: ANN001
    t = time.perf_counter()
    n = 0
    for idx, _, _ in iter_features(backbone, paths, batch_size=batch, device=device, num_workers=workers):
        n += len(idx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="*", default=None)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--image-px", type=int, default=256, help="size of the synthetic JPEGs")
    ap.add_argument("--folder", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = pick_device(args.device)
    workers = args.workers if args.workers is not None else max(0, (os.cpu_count() or 1) - 1)
    names = args.backbones or [b for b in list_backbones() if is_installed(b)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.folder:
            paths = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
            paths = paths[: args.images]
        else:
            paths = make_images(Path(tmp), args.images, args.image_px, args.seed)
        rows = []
        for name in names:
            bb = create_backbone(name)
            pre = make_preprocess(bb.spec)
            decode = bench_decode(paths[: min(len(paths), 256)], pre)
            model = bench_model(bb, bb.spec.input_size, len(paths), args.batch_size, device)
            e2e = bench_end_to_end(bb, paths, args.batch_size, device, workers)
            rows.append({"backbone": name, "input_px": bb.spec.input_size, "decode_img_s_1proc": round(decode, 1),
                         "model_img_s": round(model, 1), "end_to_end_img_s": round(e2e, 1),
                         "bottleneck": "decoding" if decode * max(1, workers) < model else "model"})
    print(f"{'backbone':20s} {'px':>4s} {'decode/1 proc':>14s} {'model':>9s} {'end-to-end':>11s}  bottleneck")
    for r in rows:
        print(f"{r['backbone']:20s} {r['input_px']:4d} {r['decode_img_s_1proc']:14.1f} {r['model_img_s']:9.1f} "
              f"{r['end_to_end_img_s']:11.1f}  {r['bottleneck']}")
    result = {
        "command": " ".join(sys.argv), "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "images": len(paths), "batch_size": args.batch_size,
        "workers": workers, "seed": args.seed, "rows": rows,
    }
    out = Path(os.environ.get("BENCH_OUT", Path(__file__).parent / "results")) / f"embed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

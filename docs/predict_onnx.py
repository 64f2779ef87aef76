"""Classify images with the ONNX file of an exported labeltool model, without labeltool or PyTorch.

Needs numpy, pillow and onnxruntime only (``pip install numpy pillow onnxruntime``)::

    python predict_onnx.py OUT/model a.jpg b.png         # per image: path, class, confidence
    python predict_onnx.py OUT/model a.jpg b.png --json  # JSON, with all class probabilities

Every step follows the folder's ``model.json`` ("input", "output", "preprocessing"), so this
file is also the reference for running the model from another language.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

SUPPORTED_FORMAT = 2
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
ORIENTATION = {  # EXIF orientation -> the transpose that shows the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def read_meta(model_dir: Path) -> dict[str, Any]:
    """``model.json`` of a format 2 folder (an older or newer format is refused, saying why)."""
    if not (model_dir / "model.json").is_file():
        sys.exit(f"{model_dir} holds no model.json: give the exported model folder (OUT/model)")
    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    version = meta.get("format_version")
    if version != SUPPORTED_FORMAT:
        sys.exit(f"{model_dir} is model format {version}; this script reads format {SUPPORTED_FORMAT} "
                 "(export the model again with a current labeltool)")
    return meta


def high_depth_to_uint8(img: Image.Image) -> np.ndarray:
    """16/32-bit integer or float grayscale ``[H, W]`` -> uint8, as "preprocessing.decode" says."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    else:
        arr = arr.astype(np.int64)
        bits = getattr(img, "tag_v2", {}).get(258)  # TIFF BitsPerSample
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        if not (isinstance(bits, int) and 8 < bits <= 16 and int(arr.max(initial=0)) < (1 << bits)):
            bits = 16 if img.mode.startswith("I;16") or (arr.size and arr.min() >= 0 and arr.max() <= 0xFFFF) else None
        if bits is not None:
            return np.clip(np.rint(arr * (255.0 / ((1 << bits) - 1))), 0, 255).astype(np.uint8)
        lo, hi = int(arr.min()), int(arr.max())
    out = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros(arr.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def load_rgb(path: Path) -> Image.Image:
    """The "decode" step: first frame, transparency over white, 8-bit RGB, EXIF orientation applied."""
    with Image.open(path) as img:
        img.seek(0)
        orientation = img.getexif().get(0x0112, 1)
        if img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        elif img.mode in ("I", "F") or img.mode.startswith("I;16"):
            rgb = Image.fromarray(high_depth_to_uint8(img)).convert("RGB")
        else:
            rgb = img.convert("RGB")
    op = ORIENTATION.get(int(orientation)) if str(orientation).isdigit() else None
    return rgb.transpose(op) if op is not None else rgb


def preprocess(img: Image.Image, pre: dict[str, Any], side: int) -> np.ndarray:
    """RGB image -> ``[3, side, side]`` float32: centre square crop, bicubic resize, /255, normalise."""
    if pre["crop"]["shape"] != "centre square" or pre["resize"]["interpolation"] != "bicubic":
        sys.exit("model.json asks for a preprocessing this script does not implement")
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    square = img.crop((left, top, left + s, top + s)).resize((side, side), Image.Resampling.BICUBIC)
    x = np.asarray(square, dtype=np.float32) / np.float32(255)  # [side, side, 3] in R, G, B order
    mean = np.asarray(pre["normalize"]["mean"], dtype=np.float32)
    std = np.asarray(pre["normalize"]["std"], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)


def predict(model_dir: Path, images: list[Path], batch_size: int = 32) -> tuple[list[str], np.ndarray]:
    """Class names ``[C]`` and probabilities ``[n, C]`` of ``images`` under the model in ``model_dir``."""
    meta = read_meta(model_dir)
    session = ort.InferenceSession(str(model_dir / meta["files"]["onnx"]), providers=["CPUExecutionProvider"])
    side = int(meta["input"]["shape"][2])
    rows = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([preprocess(load_rgb(p), meta["preprocessing"], side)
                          for p in images[start : start + batch_size]])
        rows.append(session.run([meta["output"]["name"]], {meta["input"]["name"]: batch})[0])
    probs = np.concatenate(rows) if rows else np.zeros((0, len(meta["classes"])), dtype=np.float32)
    return list(meta["classes"]), probs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the model folder (OUT/model, holding model.json and model.onnx)")
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--json", action="store_true", help="print JSON with every class probability")
    args = parser.parse_args(argv)
    model_dir = args.model / "model" if (args.model / "model" / "model.json").is_file() else args.model
    classes, probs = predict(model_dir, args.images)
    best = probs.argmax(axis=1)
    if args.json:
        rows = [{"image": str(p), "class": classes[int(b)], "confidence": float(pr[b]),
                 "probabilities": [float(v) for v in pr]} for p, b, pr in zip(args.images, best, probs, strict=True)]
        print(json.dumps({"classes": classes, "predictions": rows}, indent=1))
    else:
        for p, b, pr in zip(args.images, best, probs, strict=True):
            print(f"{p}\t{classes[int(b)]}\t{pr[b]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

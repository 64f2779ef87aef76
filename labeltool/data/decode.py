"""Decoding and validating single image files.

Everything that opens an image with Pillow goes through :func:`open_checked`, which

* only lets Pillow try the supported formats (JPEG, PNG, WebP, BMP, TIFF, GIF);
* reads the size from the header and rejects images above ``max_pixels`` *before* any pixel
  data is decoded (decompression-bomb limit);
* turns every failure into :class:`ImageDecodeError` with a specific, human-readable reason.

Pillow's own global bomb check (``PIL.Image.MAX_IMAGE_PIXELS``) is disabled once, when this
module is imported, because it cannot be set per call: with it in place an image that the caller
explicitly allows (``max_pixels`` above Pillow's default of ~89 Mpx) would fail or warn. The limit
is enforced here instead, per call, from the header. ``DecompressionBombError``/``Warning`` are
still reported as "image too large" should another library re-enable the global check.

``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone (False), so truncated files are detected
by the full decode.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = None  # the limit is enforced per call by open_checked (see docstring)
Image.init()  # register all plugins now, not lazily from several scan threads at once

DEFAULT_MAX_PIXELS: int = 100_000_000
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
CONVERTIBLE_MODES: frozenset[str] = frozenset(
    {"1", "L", "P", "RGB", "RGBA", "RGBa", "RGBX", "LA", "La", "PA", "CMYK", "YCbCr",
     "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
# EXIF orientation -> transpose, exactly as PIL.ImageOps.exif_transpose does it.
_ORIENTATION_OPS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SNIFF_BYTES = 32


class ImageDecodeError(ValueError):
    """An image file could not be decoded; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str, size: tuple[int, int] | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.size = size  # oriented (width, height) when the header could be read


def sniff_format(head: bytes) -> str | None:
    """Name of the image format whose signature starts ``head``, or None.

    Recognises JPEG, PNG, GIF, WEBP, BMP and TIFF (decodable) plus HEIF and AVIF (recognised
    so they can be reported as unsupported rather than silently ignored).
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "BMP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIF"
        if brand in _AVIF_BRANDS:
            return "AVIF"
    return None


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) after the EXIF orientation is applied."""
    w, h = img.size
    return (h, w) if exif_orientation(img) in (5, 6, 7, 8) else (w, h)


def exif_orientation(img: Image.Image) -> int:
    """EXIF orientation tag (1 when absent or unreadable; malformed EXIF never fails a decode)."""
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # broken EXIF blocks are common and harmless
        return 1


def _too_large(w: int, h: int, max_pixels: int) -> str:
    return f"image too large: {w}x{h} = {w * h} pixels > limit {max_pixels}"


def _unidentified_reason(head: bytes, size: int) -> str:
    """Why Pillow could not identify a file, from its first bytes."""
    if size == 0:
        return "empty file (0 bytes)"
    kind = sniff_format(head)
    if kind in ("HEIF", "AVIF"):
        return f"unsupported image format ({kind})"
    if kind is not None:
        return f"corrupt or truncated {kind} header"
    return "not an image (no known image signature)"


def _load_error_reason(exc: BaseException, fmt: str | None, data_len: int, head: bytes) -> str:
    """Specific reason for an exception raised while decoding pixel data."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"image too large: {exc}"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode the image"
    msg = str(exc)
    if isinstance(exc, EOFError) or "truncated" in msg:
        return "truncated image data"
    if fmt == "WEBP" and len(head) >= 8 and int.from_bytes(head[4:8], "little") + 8 > data_len:
        return "truncated image data"
    return f"corrupt image data ({type(exc).__name__}: {msg})" if msg else f"corrupt image data ({type(exc).__name__})"


def open_checked(fp: IO[bytes], name: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS,
                 *, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open, size-check and fully decode the first frame of the image in ``fp``.

    ``draft`` (JPEG only) lets the decoder downscale while decoding (fast thumbnails); the size
    limit is checked against the full header size first. Raises ImageDecodeError.
    """
    start = fp.tell()
    head = fp.read(SNIFF_BYTES)
    data_len = fp.seek(0, os.SEEK_END) - start
    fp.seek(start)
    try:
        img = Image.open(fp, formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError(name, _unidentified_reason(head, data_len)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(name, f"image too large: {exc}") from None
    except Exception as exc:  # any header parsing failure is a bad file
        raise ImageDecodeError(name, _load_error_reason(exc, sniff_format(head), data_len, head)) from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(name, f"invalid image size {w}x{h}")
    if w * h > max_pixels:
        size = oriented_size(img)
        raise ImageDecodeError(name, _too_large(*size, max_pixels), size)
    if img.mode not in CONVERTIBLE_MODES:
        raise ImageDecodeError(name, f"unsupported pixel mode {img.mode}")
    try:
        if draft is not None and img.format == "JPEG":
            img.draft("RGB", draft)
        img.load()
    except Exception as exc:  # decoder errors come in many types
        raise ImageDecodeError(name, _load_error_reason(exc, img.format, data_len, head)) from None
    return img


def _scale_to_uint8(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float grayscale -> 8-bit L, scaled by the real bit depth."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:  # the usual [0, 1] float convention
            out = arr * 255.0
        else:  # arbitrary range: stretch min..max
            out = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    else:
        arr = arr.astype(np.int64)
        bits = _bit_depth(img, arr)
        if bits is None:  # signed or > 16 bit data: stretch min..max
            lo, hi = int(arr.min()), int(arr.max())
            out = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros(arr.shape)
        else:
            out = arr * (255.0 / ((1 << bits) - 1))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="L")


def _bit_depth(img: Image.Image, arr: np.ndarray) -> int | None:
    """Bits per sample of integer data: TIFF BitsPerSample if stated, else 16 for I;16*."""
    tag = getattr(img, "tag_v2", None)
    if tag is not None:
        bps = tag.get(258)
        bps = bps[0] if isinstance(bps, tuple) and bps else bps
        if isinstance(bps, int) and 8 < bps <= 16 and int(arr.max(initial=0)) < (1 << bps):
            return bps
    if img.mode.startswith("I;16"):
        return 16
    if arr.size and int(arr.min()) >= 0 and int(arr.max()) <= 0xFFFF:
        return 16
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any supported mode to RGB; transparency is composited over white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if (mode == "P" and "transparency" in img.info) or mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _scale_to_uint8(img).convert("RGB")
    return img.convert("RGB")


def _apply_orientation(rgb: Image.Image, orientation: int) -> Image.Image:
    op = _ORIENTATION_OPS.get(orientation)
    return rgb.transpose(op) if op is not None else rgb


def _decode_rgb(path: str | Path, max_pixels: int, draft: tuple[int, int] | None = None) -> Image.Image:
    try:
        with open(path, "rb") as f:
            img = open_checked(f, path, max_pixels, draft=draft)
            orientation = exif_orientation(img)
            rgb = to_rgb(img)
            rgb = rgb.copy() if rgb is img else rgb
    except PermissionError:
        raise ImageDecodeError(path, "permission denied") from None
    except IsADirectoryError:
        raise ImageDecodeError(path, "is a directory, not a file") from None
    except FileNotFoundError:
        raise ImageDecodeError(path, "file not found") from None
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read file ({exc.strerror or exc})") from None
    return _apply_orientation(rgb, orientation)


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` to an RGB image (first frame, EXIF orientation applied).

    Raises ImageDecodeError naming the file and the reason (empty, not an image, unsupported
    format, too large, truncated, unreadable, ...).
    """
    return _decode_rgb(path, max_pixels)


def load_image_bytes(data: bytes, name: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """:func:`load_image` of file content already read (so that it can be hashed first)."""
    img = open_checked(io.BytesIO(data), name, max_pixels)
    orientation = exif_orientation(img)
    rgb = to_rgb(img)
    return _apply_orientation(rgb.copy() if rgb is img else rgb, orientation)


def make_thumbnail(path: str | Path, dest: str | Path, size: int = 192,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:
    """Write a thumbnail of ``path`` (longest side ``size``) to ``dest`` atomically.

    PNG when ``dest`` ends in .png, JPEG otherwise. Written to a temp file next to ``dest`` and
    renamed over it, so a half-written thumbnail never exists. Raises ImageDecodeError.
    """
    dest = Path(dest)
    img = _decode_rgb(path, max_pixels, draft=(size, size))
    img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if dest.suffix.lower() == ".png" else "JPEG"
    _atomic_write(dest, lambda f: img.save(f, fmt, **({"quality": 85} if fmt == "JPEG" else {})))
    return dest


def _atomic_write(dest: Path, write: Callable[[IO[bytes]], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def decode_bytes(data: bytes, name: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Validate in-memory file content; return the oriented (width, height). Raises ImageDecodeError."""
    img = open_checked(io.BytesIO(data), name, max_pixels)
    return oriented_size(img)

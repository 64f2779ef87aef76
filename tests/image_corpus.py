"""Generated image files for the scan, decode and bad-input tests: encoders, odd formats and a
corpus of broken files laid out like a user's folder."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)

# ----------------------------------------------------------------------------- corpus helpers


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def fake_png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def two_tone(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new("RGB", (w, h), RED)
    img.paste(BLUE, (w // 2, 0, w, h))
    return img


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(two_tone(), "JPEG", quality=95, exif=exif)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (12, 12), c) for c in (RED, (20, 200, 20), BLUE)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def palette_with_transparency() -> bytes:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    img.paste(1, (5, 0, 10, 10))  # right half opaque red, left half index 0 = transparent
    return encode(img, "PNG", transparency=0)


def png16(values: list[int]) -> bytes:
    arr = np.array([values], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    return encode(img, "PNG")


def build_corpus(root: Path, outside: Path) -> Path:
    """A folder with seed classes, unlabeled images and every kind of bad file."""
    ok_rgb = encode(two_tone(), "PNG")
    write(root / "cat" / "a.jpg", encode(two_tone(), "JPEG"))
    write(root / "cat" / "b.webp", encode(two_tone(), "WEBP", lossless=True))
    write(root / "cat" / "c.bmp", encode(two_tone(), "BMP"))
    write(root / "cat" / "deeper" / "d.tif", encode(two_tone(), "TIFF"))
    write(root / "dog" / "e.gif", animated_gif())
    write(root / "dog" / "rotated.jpg", exif_rotated_jpeg(6))
    write(root / "dog" / "bad.jpg", b"this is plain text, not a JPEG\n")
    write(root / "only_bad" / "empty.png", b"")
    write(root / "chat noir" / "été 1.png", ok_rgb)
    write(root / "root_level.png", ok_rgb)
    write(root / "unlabeled" / "u1.png", ok_rgb)
    write(root / "unlabeled" / "x.jpg" / "inner.png", ok_rgb)  # folder named like an image
    write(root / "Unsorted" / "u2.png", ok_rgb)
    write(root / "pool" / "deep" / "u3.png", ok_rgb)
    write(root / "misc" / "png_as.dat", ok_rgb)  # image by content
    write(root / "misc" / "jpeg_as.png", encode(two_tone(), "JPEG"))  # wrong image extension
    write(root / "misc" / "notes.csv", b"path,label\nu1.png,cat\n")
    write(root / "misc" / "README.md", b"# my images\n")
    write(root / "misc" / "bomb.png", fake_png_header(20000, 20000))
    write(root / "misc" / "photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    jpg = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    write(root / "misc" / "trunc.jpg", jpg[: len(jpg) // 2])
    png = encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    write(root / "misc" / "trunc.png", png[: len(png) // 2])
    webp = encode(two_tone(), "WEBP", quality=90)
    write(root / "misc" / "trunc.webp", webp[: len(webp) // 2])
    write(root / ".labeltool" / "thumbs" / "t.jpg", encode(two_tone(), "JPEG"))
    write(root / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(root / "export" / "cat" / "exported.png", ok_rgb)
    write(outside / "outside.png", ok_rgb)
    os.symlink(outside / "outside.png", root / "misc" / "link_out.png")
    os.symlink(outside, root / "misc" / "dirlink_out")
    os.symlink(root / "cat" / "a.jpg", root / "misc" / "link_in.jpg")
    os.symlink("..", root / "misc" / "loop_up")
    os.symlink("selfloop.png", root / "misc" / "selfloop.png")
    os.symlink("does_not_exist.png", root / "misc" / "broken.png")
    os.mkfifo(root / "misc" / "fifo.png")
    return root

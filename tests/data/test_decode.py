"""Tests for labeltool.data.decode: every format a folder may hold, decoded the way the backbone
expects, and broken files named with their reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeltool.data.decode import to_rgb
from labeltool.data.scan import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    load_image,
    make_thumbnail,
)

from image_corpus import (
    BLUE,
    RED,
    animated_gif,
    encode,
    exif_rotated_jpeg,
    fake_png_header,
    palette_with_transparency,
    png16,
    two_tone,
    write,
)


@pytest.mark.parametrize(("fmt", "kw", "tol"), [
    ("PNG", {}, 0), ("BMP", {}, 0), ("TIFF", {}, 0), ("GIF", {}, 0),
    ("JPEG", {"quality": 95}, 12), ("WEBP", {"quality": 95}, 12),
])
def test_load_image_formats(tmp_path: Path, fmt: str, kw: dict, tol: int) -> None:
    path = write(tmp_path / f"img.{fmt.lower()}", encode(two_tone(), fmt, **kw))
    img = load_image(path)
    assert (img.mode, img.size) == ("RGB", (40, 20))
    arr = np.asarray(img).astype(int)
    assert np.abs(arr[10, 5] - RED).max() <= tol
    assert np.abs(arr[10, 35] - BLUE).max() <= tol


def test_load_image_exif_orientation_rotates_pixels(tmp_path: Path) -> None:
    img = load_image(write(tmp_path / "r.jpg", exif_rotated_jpeg(6)))
    assert img.size == (20, 40)  # orientation 6: rotate 90 degrees clockwise to display
    arr = np.asarray(img).astype(int)
    assert np.abs(arr[5, 10] - RED).max() <= 12  # original left half is now on top
    assert np.abs(arr[35, 10] - BLUE).max() <= 12
    flipped = np.asarray(load_image(write(tmp_path / "f.jpg", exif_rotated_jpeg(2)))).astype(int)
    assert np.abs(flipped[10, 5] - BLUE).max() <= 12  # orientation 2: mirrored


def test_load_image_animated_gif_first_frame(tmp_path: Path) -> None:
    img = load_image(write(tmp_path / "a.gif", animated_gif()))
    assert img.getpixel((6, 6)) == RED


def test_load_image_grayscale_and_one_bit(tmp_path: Path) -> None:
    assert load_image(write(tmp_path / "g.png", encode(Image.new("L", (4, 4), 77), "PNG"))).getpixel((0, 0)) == (77,) * 3
    one = Image.new("1", (4, 4), 0)
    one.putpixel((1, 1), 1)
    img = load_image(write(tmp_path / "b.png", encode(one, "PNG")))
    assert (img.getpixel((0, 0)), img.getpixel((1, 1))) == ((0, 0, 0), (255, 255, 255))


def test_load_image_palette_transparency_over_white(tmp_path: Path) -> None:
    img = load_image(write(tmp_path / "p.png", palette_with_transparency()))
    assert img.getpixel((1, 1)) == (255, 255, 255)
    assert img.getpixel((8, 1)) == (255, 0, 0)


def test_load_image_alpha_composited_over_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 255, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    img = load_image(write(tmp_path / "a.png", encode(rgba, "PNG")))
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == (0, 0, 255)
    assert all(abs(v - 127) <= 1 for v in img.getpixel((2, 0)))
    la = Image.new("LA", (1, 1), (0, 0))
    assert load_image(write(tmp_path / "la.png", encode(la, "PNG"))).getpixel((0, 0)) == (255, 255, 255)


def test_load_image_16bit_scaled_by_bit_depth(tmp_path: Path) -> None:
    path = write(tmp_path / "g16.png", png16([0, 4112, 32768, 65535]))
    assert Image.open(path).mode == "I;16"
    px = [load_image(path).getpixel((x, 0))[0] for x in range(4)]
    assert px == [0, 16, 128, 255]
    big_endian = Image.fromarray(np.array([[0, 32768, 65535]], dtype=">u2"))
    assert big_endian.mode == "I;16B"
    assert [to_rgb(big_endian).getpixel((x, 0)) for x in range(3)] == [(0,) * 3, (128,) * 3, (255,) * 3]
    as_i = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32))
    assert as_i.mode == "I"
    assert [to_rgb(as_i).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_images_are_scaled(tmp_path: Path) -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [to_rgb(unit).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32))
    assert [to_rgb(wide).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    path = write(tmp_path / "f.tif", encode(unit, "TIFF"))
    assert load_image(path).getpixel((2, 0)) == (255, 255, 255)


def test_load_image_cmyk_jpeg(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # red
    cmyk.paste((0, 0, 0, 0), (8, 0, 16, 8))  # white
    path = write(tmp_path / "c.jpg", encode(cmyk, "JPEG", quality=95))
    assert Image.open(path).mode == "CMYK"
    arr = np.asarray(load_image(path)).astype(int)
    assert np.abs(arr[4, 2] - (255, 0, 0)).max() <= 12
    assert np.abs(arr[4, 13] - (255, 255, 255)).max() <= 12


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty file (0 bytes)"),
    (b"hello world", "not an image (no known image signature)"),
    (fake_png_header(20000, 20000), "image too large: 20000x20000 = 400000000 pixels > limit 100000000"),
    (b"\x89PNG\r\n\x1a\n", "corrupt or truncated PNG header"),
], ids=["empty", "text", "bomb", "png-signature-only"])
def test_load_image_errors_name_file_and_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    path = write(tmp_path / "bad.png", data)
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert info.value.reason == reason
    assert str(path) in str(info.value) and reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_image_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(ImageDecodeError, match="is a directory"):
        load_image(tmp_path / "x.jpg")


def test_pillow_global_limit_does_not_block_allowed_sizes(tmp_path: Path) -> None:
    """15000x15000 exceeds twice Pillow's default limit; with max_pixels raised it must get past the
    size check (and fail only because the crafted file has no real pixel data)."""
    path = write(tmp_path / "big.png", fake_png_header(15000, 15000))
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, max_pixels=300_000_000)
    assert info.value.reason == "truncated image data"
    assert DEFAULT_MAX_PIXELS == 100_000_000


# ----------------------------------------------------------------------------- thumbnails


def test_make_thumbnail_jpeg_and_png(tmp_path: Path) -> None:
    src = write(tmp_path / "big.jpg", encode(two_tone(800, 400), "JPEG", quality=90))
    out = make_thumbnail(src, tmp_path / "thumbs" / "t.jpg", size=100)
    assert out == tmp_path / "thumbs" / "t.jpg"
    with Image.open(out) as t:
        assert (t.format, t.size) == ("JPEG", (100, 50))
        assert np.abs(np.asarray(t.convert("RGB")).astype(int)[25, 10] - RED).max() <= 15
    png = make_thumbnail(write(tmp_path / "r.jpg", exif_rotated_jpeg(6)), tmp_path / "thumbs" / "r.png", size=10)
    with Image.open(png) as t:
        assert (t.format, t.size) == ("PNG", (5, 10))
    assert sorted(p.name for p in (tmp_path / "thumbs").iterdir()) == ["r.png", "t.jpg"]


def test_make_thumbnail_bad_source_writes_nothing(tmp_path: Path) -> None:
    src = write(tmp_path / "bad.jpg", b"nope")
    with pytest.raises(ImageDecodeError, match="not an image"):
        make_thumbnail(src, tmp_path / "t" / "bad.jpg")
    assert not (tmp_path / "t" / "bad.jpg").exists()


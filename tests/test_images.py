"""Tests for labeltool.images / labeltool.image_decode on a corpus generated in tmp_path."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeltool import images
from labeltool.image_decode import to_rgb
from labeltool.images import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    ScannedFile,
    load_image,
    make_thumbnail,
    scan_folder,
    seed_class_of,
)

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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("corpus")
    return build_corpus(base / "photos", base / "elsewhere")


@pytest.fixture(scope="module")
def report(corpus: Path) -> images.ScanReport:
    return scan_folder(corpus, exclude=["export"])


def rec(report: images.ScanReport, relpath: str) -> ScannedFile:
    found = [f for f in report.files if f.relpath == relpath]
    assert found, f"{relpath} not in files: {[f.relpath for f in report.files]}"
    return found[0]


def ignored_reason(report: images.ScanReport, relpath: str) -> str:
    reasons = dict(report.ignored)
    assert relpath in reasons, f"{relpath} not in ignored: {report.ignored}"
    return reasons[relpath]


# ----------------------------------------------------------------------------- scan: layout


def test_seed_class_of_layout_rules() -> None:
    assert seed_class_of("cat/a.jpg") == "cat"
    assert seed_class_of("cafe\u0301/a.jpg") == "caf\u00e9"  # folder names arrive NFD from macOS
    assert seed_class_of("chat noir/été 1.png") == "chat noir"
    assert seed_class_of("a.jpg") is None
    assert seed_class_of("cat/sub/a.jpg") is None
    assert seed_class_of("unlabeled/a.jpg") is None
    assert seed_class_of("UnLabelled/a.jpg") is None
    assert seed_class_of("cat/pool/a.jpg") is None
    assert seed_class_of("mine/a.jpg", frozenset({"Mine"})) is None
    assert seed_class_of("unlabeled/a.jpg", frozenset({"mine"})) == "unlabeled"


def test_scan_seed_classes_and_sorting(report: images.ScanReport) -> None:
    relpaths = [f.relpath for f in report.files]
    assert relpaths == sorted(relpaths)
    # only_bad has nothing but an empty file, so it is not a class
    assert report.classes == ["cat", "chat noir", "dog", "misc"]
    assert rec(report, "cat/a.jpg").seed_class == "cat"
    assert rec(report, "chat noir/été 1.png").seed_class == "chat noir"
    for unlabeled in ("root_level.png", "cat/deeper/d.tif", "unlabeled/u1.png", "Unsorted/u2.png",
                      "pool/deep/u3.png", "unlabeled/x.jpg/inner.png"):
        assert rec(report, unlabeled).seed_class is None, unlabeled
        assert rec(report, unlabeled).status == "ok", unlabeled


def test_scan_ok_records_have_hash_and_size(report: images.ScanReport, corpus: Path) -> None:
    r = rec(report, "cat/a.jpg")
    raw = (corpus / "cat" / "a.jpg").read_bytes()
    assert (r.status, r.error, r.width, r.height) == ("ok", None, 40, 20)
    assert r.sha256 == hashlib.sha256(raw).hexdigest()
    assert r.size_bytes == len(raw)
    assert r.mtime_ns == (corpus / "cat" / "a.jpg").stat().st_mtime_ns
    for p in ("cat/b.webp", "cat/c.bmp", "cat/deeper/d.tif"):
        assert (rec(report, p).status, rec(report, p).width, rec(report, p).height) == ("ok", 40, 20)
    assert (rec(report, "dog/e.gif").width, rec(report, "dog/e.gif").height) == (12, 12)


def test_scan_exif_rotation_swaps_size(report: images.ScanReport) -> None:
    r = rec(report, "dog/rotated.jpg")
    assert (r.status, r.width, r.height) == ("ok", 20, 40)


def test_scan_error_reasons(report: images.ScanReport) -> None:
    expected = {
        "dog/bad.jpg": "not an image (no known image signature)",
        "only_bad/empty.png": "empty file (0 bytes)",
        "misc/trunc.jpg": "truncated image data",
        "misc/trunc.png": "truncated image data",
        "misc/trunc.webp": "truncated image data",
        "misc/bomb.png": "image too large: 20000x20000 = 400000000 pixels > limit 100000000",
        "misc/photo.heic": "unsupported image format (HEIF)",
    }
    for relpath, reason in expected.items():
        r = rec(report, relpath)
        assert (r.status, r.error) == ("error", reason), relpath
    assert rec(report, "only_bad/empty.png").sha256 == hashlib.sha256(b"").hexdigest()
    assert (rec(report, "misc/bomb.png").width, rec(report, "misc/bomb.png").height) == (20000, 20000)
    assert {f.relpath for f in report.errors} == set(expected)


def test_scan_reads_images_by_content(report: images.ScanReport) -> None:
    for relpath in ("misc/png_as.dat", "misc/jpeg_as.png"):
        r = rec(report, relpath)
        assert (r.status, r.width, r.height) == ("ok", 40, 20), relpath


def test_scan_ignored_entries(report: images.ScanReport) -> None:
    assert ignored_reason(report, "misc/notes.csv") == "not an image"
    assert ignored_reason(report, "misc/README.md") == "not an image"
    assert ignored_reason(report, ".labeltool") == "hidden folder"
    assert ignored_reason(report, ".DS_Store") == "hidden file"
    assert ignored_reason(report, "export") == "excluded"
    assert ignored_reason(report, "misc/link_out.png") == "symlink points outside the folder"
    assert ignored_reason(report, "misc/dirlink_out") == "symlink points outside the folder"
    assert ignored_reason(report, "misc/loop_up") == "symlink loop"
    assert ignored_reason(report, "misc/selfloop.png") == "symlink loop"
    assert ignored_reason(report, "misc/broken.png") == "broken symlink"
    assert ignored_reason(report, "misc/fifo.png") == "not a regular file"
    listed = {f.relpath for f in report.files}
    assert not any(p.startswith((".labeltool", "export", "misc/loop_up")) for p in listed)
    assert "unlabeled/x.jpg" not in listed


def test_scan_symlinked_file_inside_root_is_scanned(report: images.ScanReport) -> None:
    link, target = rec(report, "misc/link_in.jpg"), rec(report, "cat/a.jpg")
    assert link.status == "ok" and link.sha256 == target.sha256


def test_scan_exclude_absolute_and_without_exclude(corpus: Path) -> None:
    rep = scan_folder(corpus, exclude=[corpus / "misc", corpus / "export"])
    assert not any(f.relpath.startswith(("misc/", "export/")) for f in rep.files)
    assert ignored_reason(rep, "misc") == "excluded"
    rep2 = scan_folder(corpus)
    assert rec(rep2, "export/cat/exported.png").seed_class is None  # nested two levels deep


def test_scan_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "cls" / "locked.png", encode(two_tone(), "PNG"))
    if os.geteuid() != 0:  # root reads anything, so the real chmod check only works for users
        path.chmod(0)
        try:
            r = rec(scan_folder(tmp_path), "cls/locked.png")
        finally:
            path.chmod(0o644)
        assert (r.status, r.error, r.sha256) == ("error", "permission denied", None)

    real_open = open

    def deny(file: object, *args: object, **kw: object) -> object:
        if str(file).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(images, "open", deny, raising=False)
    r = rec(scan_folder(tmp_path), "cls/locked.png")
    assert (r.status, r.error, r.sha256, r.width) == ("error", "permission denied", None, None)


def test_scan_non_utf8_name_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "ok.png", encode(two_tone(), "PNG"))
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.png"), "wb") as f:
        f.write(encode(two_tone(), "PNG"))
    rep = scan_folder(tmp_path)
    assert [f.relpath for f in rep.files] == ["ok.png"]
    assert rep.ignored == [("bad\\xff.png", "file name is not valid UTF-8")]


def test_scan_small_max_pixels_and_missing_root(tmp_path: Path) -> None:
    write(tmp_path / "a.png", encode(two_tone(), "PNG"))
    r = rec(scan_folder(tmp_path, max_pixels=799), "a.png")
    assert (r.status, r.error) == ("error", "image too large: 40x20 = 800 pixels > limit 799")
    assert rec(scan_folder(tmp_path, max_pixels=800), "a.png").status == "ok"
    with pytest.raises(NotADirectoryError):
        scan_folder(tmp_path / "missing")


def test_progress_callback(corpus: Path) -> None:
    calls: list[tuple[int, int]] = []
    rep = scan_folder(corpus, exclude=["export"], progress=lambda d, t: calls.append((d, t)))
    total = len(rep.files)
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == list(range(total + 1))


# ----------------------------------------------------------------------------- re-scan


def test_rescan_add_remove_modify_and_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path / "cls" / f"{name}.png", encode(Image.new("RGB", (8, 8), RED), "PNG"))
    first = scan_folder(tmp_path)
    old = first.by_relpath()

    (tmp_path / "cls" / "b.png").unlink()
    write(tmp_path / "cls" / "d.png", encode(Image.new("RGB", (9, 9), BLUE), "PNG"))
    c_path = tmp_path / "cls" / "c.png"
    write(c_path, encode(Image.new("RGB", (10, 6), BLUE), "PNG"))
    os.utime(c_path, ns=(old["cls/c.png"].mtime_ns + 1_000_000_000,) * 2)

    examined: list[str] = []
    real_examine = images._examine

    def counting(c: object, max_pixels: int, seed: str | None) -> ScannedFile:
        examined.append(c.relpath)  # type: ignore[attr-defined]
        return real_examine(c, max_pixels, seed)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "_examine", counting)
    second = scan_folder(tmp_path, previous=old)
    assert sorted(examined) == ["cls/c.png", "cls/d.png"]  # a.png reused, b.png gone
    now = second.by_relpath()
    assert sorted(now) == ["cls/a.png", "cls/c.png", "cls/d.png"]
    assert now["cls/a.png"] is old["cls/a.png"]
    assert now["cls/c.png"].sha256 != old["cls/c.png"].sha256
    assert (now["cls/c.png"].width, now["cls/c.png"].height) == (10, 6)


def test_rescan_trusts_size_and_mtime(tmp_path: Path) -> None:
    """Documented trade-off: same size + restored mtime is not re-read when ``previous`` is given."""
    path = write(tmp_path / "a.png", encode(Image.new("L", (8, 8), 10), "PNG"))
    first = scan_folder(tmp_path).by_relpath()
    st = path.stat()
    data = encode(Image.new("L", (8, 8), 200), "PNG")
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert scan_folder(tmp_path, previous=first).files[0].sha256 == first["a.png"].sha256
    assert scan_folder(tmp_path).files[0].sha256 == hashlib.sha256(data).hexdigest()


def test_rescan_rereads_unreadable_and_limit_dependent_records(tmp_path: Path) -> None:
    write(tmp_path / "a.png", encode(two_tone(), "PNG"))
    small = scan_folder(tmp_path, max_pixels=100).by_relpath()
    assert small["a.png"].status == "error"
    assert scan_folder(tmp_path, previous=small).files[0].status == "ok"
    ok = scan_folder(tmp_path).by_relpath()
    assert scan_folder(tmp_path, previous=ok, max_pixels=100).files[0].status == "error"
    fake = {"a.png": ScannedFile("a.png", ok["a.png"].size_bytes, ok["a.png"].mtime_ns, None, None, None,
                                 "error", "permission denied", None)}
    assert scan_folder(tmp_path, previous=fake).files[0].status == "ok"


def test_rescan_updates_seed_class_of_reused_records(tmp_path: Path) -> None:
    write(tmp_path / "pool" / "a.png", encode(two_tone(), "PNG"))
    first = scan_folder(tmp_path, unlabeled_dirs=frozenset()).by_relpath()
    assert first["pool/a.png"].seed_class == "pool"
    assert scan_folder(tmp_path, previous=first).files[0].seed_class is None


# ----------------------------------------------------------------------------- load_image


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


def test_large_files_are_hashed_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write(tmp_path / "a.png", encode(two_tone(), "PNG"))
    png = encode(Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    write(tmp_path / "t.png", png[: len(png) // 2])
    monkeypatch.setattr(images, "IN_MEMORY_LIMIT", 16)
    rep = scan_folder(tmp_path).by_relpath()
    assert rep["a.png"].sha256 == hashlib.sha256(good.read_bytes()).hexdigest()
    assert (rep["a.png"].status, rep["a.png"].width, rep["a.png"].height) == ("ok", 40, 20)
    assert (rep["t.png"].status, rep["t.png"].error) == ("error", "truncated image data")


# ----------------------------------------------------------------------------- sample_data

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FASHION = Path("/usr/share/datasets/fashion-mnist")
SAMPLE_CLASSES = ["ankle_boot", "bag", "coat", "dress", "pullover", "sandal", "shirt", "sneaker",
                  "t-shirt_top", "trouser"]


def test_sample_data_scans_as_seed_plus_pool() -> None:
    rep = scan_folder(SAMPLE)
    assert rep.classes == SAMPLE_CLASSES
    assert not rep.errors and len(rep.files) == 450
    seeds = [f for f in rep.files if f.seed_class]
    assert len(seeds) == 50 and all((f.width, f.height) == (28, 28) for f in rep.files)
    ignored = {p for p, _ in rep.ignored}
    assert {"README.md", "LICENSE-fashion-mnist.txt", "make_sample_data.py", "unlabeled_labels.csv"} <= ignored
    with open(SAMPLE / "unlabeled_labels.csv", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split(",") for line in f]
    assert rows[0] == ["path", "label"]
    pool = {f.relpath for f in rep.files if f.seed_class is None}
    assert {r[0] for r in rows[1:]} == pool and len(rows) == 401
    labels = [r[1] for r in rows[1:]]
    assert sorted(set(labels)) == SAMPLE_CLASSES and all(labels.count(c) == 40 for c in SAMPLE_CLASSES)


@pytest.mark.skipif(not (FASHION / "t10k-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_sample_data_is_reproducible(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-B", str(SAMPLE / "make_sample_data.py"), "--source", str(FASHION),
                    "--seed", "0", "--out", str(tmp_path)], check=True, capture_output=True)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(built) == 451
    for rel in built:
        assert (tmp_path / rel).read_bytes() == (SAMPLE / rel).read_bytes(), rel


def test_relpath_index_finds_a_path_in_another_normal_form() -> None:
    index = images.RelpathIndex({"caf\u00e9/1.png": 1, "b.png": 2})
    assert index.find("cafe\u0301/1.png") == 1  # written on macOS, folder copied on Linux
    assert index.find("b.png") == 2 and index.find("x.png") is None
    both = images.RelpathIndex({"caf\u00e9.png": 1, "cafe\u0301.png": 2})  # two files, one name per form
    assert both.find("caf\u00e9.png") == 1 and both.find("cafe\u0301.png") == 2  # exact match wins

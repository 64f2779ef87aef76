"""The bad-input corpus: the broken-file corpus of ``tests/test_images.py`` plus the remaining
kinds of issue 6, each with the outcome it must have (imported, skipped with a reason, ignored)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from image_corpus import build_corpus, encode, palette_with_transparency, png16, two_tone, write

RED = (220, 20, 20)


@dataclass(frozen=True)
class Case:
    """One kind of bad input: where it lies and what must become of it.

    ``outcome`` is ``ok`` (imported; ``detail`` = its seed class or "" when unlabeled),
    ``error`` (listed as broken; ``detail`` = the reason, a prefix) or ``ignored`` (not an image
    candidate; ``detail`` = the reason).
    """

    kind: str
    relpath: str
    outcome: str
    detail: str


CASES: tuple[Case, ...] = (
    # from tests/image_corpus.py::build_corpus
    Case("zero-byte file", "only_bad/empty.png", "error", "empty file (0 bytes)"),
    Case("truncated JPEG", "misc/trunc.jpg", "error", "truncated image data"),
    Case("truncated PNG", "misc/trunc.png", "error", "truncated image data"),
    Case("truncated WebP", "misc/trunc.webp", "error", "truncated image data"),
    Case("text file named .jpg", "dog/bad.jpg", "error", "not an image (no known image signature)"),
    Case("JPEG with a .png extension (read by content)", "misc/jpeg_as.png", "ok", "misc"),
    Case("PNG with a .dat extension (read by content)", "misc/png_as.dat", "ok", "misc"),
    Case("decompression bomb (20000x20000 header)", "misc/bomb.png", "error", "image too large: 20000x20000"),
    Case("HEIC (unsupported format)", "misc/photo.heic", "error", "unsupported image format (HEIF)"),
    Case("animated GIF (first frame)", "dog/e.gif", "ok", "dog"),
    Case("EXIF-rotated JPEG", "dog/rotated.jpg", "ok", "dog"),
    Case("directory named like an image", "unlabeled/x.jpg/inner.png", "ok", ""),
    Case("symlink loop (folder)", "misc/loop_up", "ignored", "symlink loop"),
    Case("symlink loop (file)", "misc/selfloop.png", "ignored", "symlink loop"),
    Case("symlink to a file outside the folder", "misc/link_out.png", "ignored", "symlink points outside the folder"),
    Case("symlink to a folder outside", "misc/dirlink_out", "ignored", "symlink points outside the folder"),
    Case("symlink to an image inside the folder", "misc/link_in.jpg", "ok", "misc"),
    Case("broken symlink", "misc/broken.png", "ignored", "broken symlink"),
    Case("named pipe named .png", "misc/fifo.png", "ignored", "not a regular file"),
    Case("CSV and README beside the images", "misc/notes.csv", "ignored", "not an image"),
    Case("hidden file", ".DS_Store", "ignored", "hidden file"),
    # added here
    Case("1x1 image", "edge/one_by_one.png", "ok", "edge"),
    Case("20000x1 image", "edge/wide_20000x1.png", "ok", "edge"),
    Case("16-bit grayscale PNG", "edge/gray16.png", "ok", "edge"),
    Case("CMYK JPEG", "edge/cmyk.jpg", "ok", "edge"),
    Case("palette PNG with transparency", "edge/palette_alpha.png", "ok", "edge"),
    Case("grayscale PNG", "edge/gray.png", "ok", "edge"),
    Case("duplicate content under a second path", "edge/dup of gray.png", "ok", "edge"),
    Case("file name with spaces", "edge/name with spaces.png", "ok", "edge"),
    Case("unicode file name", "edge/ünïcödé 名前.png", "ok", "edge"),
    Case("file name with a newline", "edge/new\nline.png", "ok", "edge"),
    Case("file name with leading dashes", "edge/-rf --all.png", "ok", "edge"),
    Case("file name starting with =", "edge/=cmd().png", "ok", "edge"),
    Case("unreadable file (permission denied)", "edge/locked.png", "error", "permission denied"),
    Case("file name that is not UTF-8", "edge/bad\\xff.png", "ignored", "file name is not valid UTF-8"),
    Case("class folder with control characters", "ctl\x01class\tname/a.png", "ok", "ctl\x01class\tname"),
    Case("class folder .hidden", ".hidden", "ignored", "hidden folder"),
    Case("class folder '...' ('..' cannot be created)", "...", "ignored", "hidden folder"),
    Case("class with one image", "solo/only.png", "ok", "solo"),
    Case("class folder named like a device (CON)", "CON/c.png", "ok", "CON"),
    Case("class folder named like a formula", "=HYPERLINK(1)/f.png", "ok", "=HYPERLINK(1)"),
    Case("class folder with a leading dash", "-dash/d.png", "ok", "-dash"),
)
EMPTY_CLASS = "empty_class"  # an empty class folder: no class, nothing listed
LOCKED = "edge/locked.png"


def build(root: Path, outside: Path) -> Path:
    """The whole corpus under ``root`` (``outside`` receives the symlink targets)."""
    build_corpus(root, outside)
    ok = encode(two_tone(), "PNG")
    gray = encode(Image.new("L", (8, 8), 77), "PNG")
    files = {
        "edge/one_by_one.png": encode(Image.new("RGB", (1, 1), RED), "PNG"),
        "edge/wide_20000x1.png": encode(Image.new("RGB", (20000, 1), RED), "PNG"),
        "edge/gray16.png": png16([0, 1000, 40000, 65535]),
        "edge/cmyk.jpg": encode(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG"),
        "edge/palette_alpha.png": palette_with_transparency(),
        "edge/gray.png": gray,
        "edge/dup of gray.png": gray,
        "edge/name with spaces.png": ok,
        "edge/ünïcödé 名前.png": encode(two_tone(12, 6), "PNG"),
        "edge/new\nline.png": encode(two_tone(14, 6), "PNG"),
        "edge/-rf --all.png": encode(two_tone(16, 6), "PNG"),
        "edge/=cmd().png": encode(two_tone(18, 6), "PNG"),
        LOCKED: encode(two_tone(20, 6), "PNG"),
        "ctl\x01class\tname/a.png": encode(two_tone(22, 6), "PNG"),
        ".hidden/h.png": ok,
        ".../dots.png": ok,
        "solo/only.png": encode(two_tone(24, 6), "PNG"),
        "CON/c.png": encode(two_tone(26, 6), "PNG"),
        "=HYPERLINK(1)/f.png": encode(two_tone(28, 6), "PNG"),
        "-dash/d.png": encode(two_tone(30, 6), "PNG"),
    }
    for rel, data in files.items():
        write(root / rel, data)
    with open(os.path.join(os.fsencode(root / "edge"), b"bad\xff.png"), "wb") as f:
        f.write(ok)
    (root / EMPTY_CLASS).mkdir()
    (root / LOCKED).chmod(0)  # root ignores this; the tests also deny the read itself
    return root

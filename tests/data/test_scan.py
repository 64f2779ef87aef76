"""Tests for labeltool.data.scan / labeltool.data.decode on a corpus generated in tmp_path."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeltool.data import scan as images
from labeltool.data.scan import (
    ScannedFile,
    scan_folder,
    seed_class_of,
)

from image_corpus import (
    BLUE,
    RED,
    build_corpus,
    encode,
    two_tone,
    write,
)


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

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
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

"""Scan a user's image folder: find, validate and seed-label every image.

Folder layout (what :func:`scan_folder` understands)::

    <root>/cat/a.jpg             seed-labeled "cat" (file directly inside a top-level folder)
    <root>/dog/b.png             seed-labeled "dog"
    <root>/c.jpg                 unlabeled (file in the root itself)
    <root>/unlabeled/d.jpg       unlabeled (folder named unlabeled, unlabelled, unsorted, pool or
                                 _unlabeled, compared case-insensitively; at any depth)
    <root>/cat/more/e.jpg        unlabeled (nested deeper than one level)
    <root>/.labeltool/...        skipped: hidden files and folders (name starts with ".")

Rules:

* A file is an image candidate when its extension is one of :data:`IMAGE_EXTENSIONS` or when
  its first bytes carry a known image signature (JPEG, PNG, GIF, WebP, BMP, TIFF; HEIF/AVIF
  are recognised and reported as unsupported). An image with a wrong extension is read by its
  content. Other files (CSV, README, ...) are listed in ``ignored``, never as errors.
* Every candidate is fully decoded once (truncation is detected), after its size has been
  checked against ``max_pixels`` from the header. Bad files get ``status="error"`` and a
  specific ``error``; one bad file never stops the scan.
* ``exclude`` paths (absolute, or relative to the root) are skipped entirely.
* Symlinked files whose target lies inside the root are scanned under the link's path.
  Symlinks leaving the root, broken symlinks and symlink loops are not followed. Symlinked
  folders inside the root are not followed either: their target is scanned under its own path
  (following them would only list the same images twice). All of these go to ``ignored``.
* ``previous`` makes re-scans fast: a file whose relpath, size and mtime are unchanged keeps its
  earlier record without being read again. Trade-off: content rewritten with the same size and
  a restored mtime goes unnoticed until the next scan without ``previous``.

Decoding helpers live in :mod:`labeltool.data.decode` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import stat
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from labeltool.data.decode import (
    DEFAULT_MAX_PIXELS,
    SNIFF_BYTES,
    ImageDecodeError,
    decode_bytes,
    load_image,
    make_thumbnail,
    open_checked,
    oriented_size,
    sniff_format,
)

__all__ = [
    "DEFAULT_MAX_PIXELS", "DEFAULT_UNLABELED_DIRS", "IMAGE_EXTENSIONS", "ImageDecodeError", "RelpathIndex",
    "ScanReport", "ScannedFile", "load_image", "make_thumbnail", "scan_folder", "seed_class_of",
    "sniff_format",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
DEFAULT_UNLABELED_DIRS: frozenset[str] = frozenset(
    {"unlabeled", "unlabelled", "unsorted", "pool", "_unlabeled"}
)
IN_MEMORY_LIMIT = 64 * 1024 * 1024  # larger files are hashed in chunks and decoded from disk
_SCAN_WORKERS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ScannedFile:
    """One image candidate found by a scan (ok or error)."""

    relpath: str
    size_bytes: int
    mtime_ns: int
    sha256: str | None
    width: int | None
    height: int | None
    status: str
    error: str | None
    seed_class: str | None


@dataclass
class ScanReport:
    """Result of :func:`scan_folder`."""

    root: str
    files: list[ScannedFile] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """Sorted seed class names that have at least one ok image."""
        return sorted({f.seed_class for f in self.files if f.status == "ok" and f.seed_class})

    @property
    def ok(self) -> list[ScannedFile]:
        return [f for f in self.files if f.status == "ok"]

    @property
    def errors(self) -> list[ScannedFile]:
        return [f for f in self.files if f.status != "ok"]

    def by_relpath(self) -> dict[str, ScannedFile]:
        """Mapping relpath -> record, the shape ``scan_folder(previous=...)`` expects."""
        return {f.relpath: f for f in self.files}


def seed_class_of(relpath: str, unlabeled_dirs: frozenset[str] = DEFAULT_UNLABELED_DIRS) -> str | None:
    """Seed class of a POSIX relpath: its top folder (NFC-normalised) when exactly one level deep, else None."""
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    lowered = {d.lower() for d in unlabeled_dirs}
    if any(p.lower() in lowered for p in parts[:-1]):
        return None
    return unicodedata.normalize("NFC", parts[0]) if len(parts) == 2 else None


class RelpathIndex(dict[str, int]):
    """Image relpath → id that also finds a path written in another Unicode normal form (a CSV
    made on macOS names files in NFD, a copy of the folder on Linux has them in NFC): exact
    match first, else the NFC form when exactly one image has it."""

    def __init__(self, items: Mapping[str, int]) -> None:
        super().__init__(items)
        nfc: dict[str, list[int]] = {}
        for path, image_id in items.items():
            nfc.setdefault(unicodedata.normalize("NFC", path), []).append(image_id)
        self._nfc = {p: ids[0] for p, ids in nfc.items() if len(ids) == 1}

    def find(self, relpath: str) -> int | None:
        """The image id of ``relpath``, or None."""
        if relpath in self:
            return self[relpath]
        return self._nfc.get(unicodedata.normalize("NFC", relpath))


@dataclass(frozen=True)
class _Candidate:
    relpath: str
    path: str
    size_bytes: int
    mtime_ns: int


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _has_signature(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return sniff_format(f.read(SNIFF_BYTES)) is not None
    except OSError:
        return False


class _Walker:
    """Recursive os.scandir walk collecting candidates and ignored entries."""

    def __init__(self, root: Path, exclude: Sequence[str | Path]) -> None:
        self.root = str(root)
        self.root_real = os.path.realpath(root)
        self.excluded = {os.path.realpath(Path(e) if Path(e).is_absolute() else root / e) for e in exclude}
        self.candidates: list[_Candidate] = []
        self.ignored: list[tuple[str, str]] = []

    def run(self) -> None:
        stack = [(self.root, "", self.root_real)]
        while stack:
            path, prefix, real = stack.pop()
            try:
                with os.scandir(path) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.ignored.append((prefix.rstrip("/") or ".", f"cannot read folder ({exc.strerror or exc})"))
                continue
            for entry in reversed(entries):
                sub = self._visit(entry, prefix, real)
                if sub is not None:
                    stack.append(sub)

    def _visit(self, entry: os.DirEntry[str], prefix: str, dir_real: str) -> tuple[str, str, str] | None:
        name = entry.name
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(name).decode("utf-8", "backslashreplace")
            self.ignored.append((prefix + shown, "file name is not valid UTF-8"))
            return None
        rel = prefix + name
        if name.startswith("."):
            kind = "folder" if entry.is_dir(follow_symlinks=False) else "file"
            self.ignored.append((rel, f"hidden {kind}"))
            return None
        real = os.path.join(dir_real, name)
        try:
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                st = os.stat(entry.path)
            else:
                st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            self.ignored.append((rel, _stat_error(exc)))
            return None
        if entry.is_symlink():
            reason = self._symlink_reason(real, dir_real, stat.S_ISDIR(st.st_mode))
            if reason:
                self.ignored.append((rel, reason))
                return None
        if real in self.excluded:
            self.ignored.append((rel, "excluded"))
            return None
        if stat.S_ISDIR(st.st_mode):
            return entry.path, rel + "/", real
        if not stat.S_ISREG(st.st_mode):
            self.ignored.append((rel, "not a regular file"))
            return None
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS or _has_signature(entry.path):
            self.candidates.append(_Candidate(rel, entry.path, st.st_size, st.st_mtime_ns))
        else:
            self.ignored.append((rel, "not an image"))
        return None

    def _symlink_reason(self, target: str, dir_real: str, is_dir: bool) -> str | None:
        if not _inside(target, self.root_real):
            return "symlink points outside the folder"
        if is_dir and _inside(dir_real, target):
            return "symlink loop"
        if is_dir:
            return "symlinked folder not followed (its target is scanned under its own path)"
        return None


def _stat_error(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, FileNotFoundError):
        return "broken symlink"
    return f"cannot read ({exc.strerror or exc})"


def _examine(c: _Candidate, max_pixels: int, seed: str | None) -> ScannedFile:
    """Read, hash and validate one candidate; never raises."""
    size, mtime, sha = c.size_bytes, c.mtime_ns, None
    dims: tuple[int, int] | None = None
    error: str | None = None
    try:
        with open(c.path, "rb") as f:
            st = os.fstat(f.fileno())
            size, mtime = st.st_size, st.st_mtime_ns
            if size <= IN_MEMORY_LIMIT:
                data = f.read()
                sha = hashlib.sha256(data).hexdigest()
                dims = decode_bytes(data, c.relpath, max_pixels)
            else:
                hasher = hashlib.sha256()
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    hasher.update(chunk)
                sha = hasher.hexdigest()
                f.seek(0)
                dims = oriented_size(open_checked(f, c.relpath, max_pixels))
    except ImageDecodeError as exc:
        error, dims = exc.reason, exc.size
    except PermissionError:
        error = "permission denied"
    except OSError as exc:
        error = f"cannot read file ({exc.strerror or exc})"
    except Exception as exc:  # a bad file must never stop the scan
        error = f"unexpected error ({type(exc).__name__}: {exc})"
    w, h = dims if dims is not None else (None, None)
    return ScannedFile(c.relpath, size, mtime, sha, w, h, "error" if error else "ok", error, seed)


def _reusable(prev: ScannedFile | None, c: _Candidate, max_pixels: int) -> bool:
    """Whether an earlier record still holds for this candidate."""
    if prev is None or prev.size_bytes != c.size_bytes or prev.mtime_ns != c.mtime_ns:
        return False
    if prev.sha256 is None:  # unreadable before; permissions change without touching mtime
        return False
    pixels = (prev.width or 0) * (prev.height or 0)
    if prev.status == "ok":
        return pixels <= max_pixels
    return not (prev.error or "").startswith("image too large") or pixels > max_pixels


def scan_folder(
    root: str | Path,
    *,
    exclude: Sequence[str | Path] = (),
    unlabeled_dirs: frozenset[str] = DEFAULT_UNLABELED_DIRS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    previous: Mapping[str, ScannedFile] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScanReport:
    """Walk ``root`` and validate every image candidate (see the module docstring).

    ``progress(done, total)`` is called once with ``done=0`` when the candidates are known and
    then after each file (in the calling thread). Raises NotADirectoryError only when ``root``
    itself is not a folder; problems with individual files end up in the report.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    walker = _Walker(root, exclude)
    walker.run()
    cands = walker.candidates
    total = len(cands)
    if progress:
        progress(0, total)
    results: list[ScannedFile] = []
    todo: list[tuple[_Candidate, str | None]] = []
    for c in cands:
        seed = seed_class_of(c.relpath, unlabeled_dirs)
        prev = previous.get(c.relpath) if previous else None
        if prev is not None and _reusable(prev, c, max_pixels):
            results.append(prev if prev.seed_class == seed else dataclasses.replace(prev, seed_class=seed))
            if progress:
                progress(len(results), total)
        else:
            todo.append((c, seed))
    if todo:
        with ThreadPoolExecutor(max_workers=min(_SCAN_WORKERS, len(todo))) as pool:
            futures = [pool.submit(_examine, c, max_pixels, seed) for c, seed in todo]
            for fut in as_completed(futures):
                results.append(fut.result())
                if progress:
                    progress(len(results), total)
    results.sort(key=lambda f: f.relpath)
    return ScanReport(root=str(root), files=results, ignored=sorted(walker.ignored))

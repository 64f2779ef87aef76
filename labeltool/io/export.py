"""Atomic export of a project: the labeled dataset (one folder per class + manifest) and the model.

Layout of ``OUT``::

    dataset/<class>/<image>        copies (or hard links) of the labeled images
    dataset/manifest.csv           path, label, source, round, confidence, source_path, sha256
    dataset/manifest.parquet       the same table
    model/                         see labeltool.io.model_io

Everything is written into a temporary sibling directory ``.OUT.partial-*`` and renamed into
place at the end, so a half-written export never exists under ``OUT``; an existing ``OUT`` is
swapped with the new one in one atomic exchange (Linux ``renameat2``; elsewhere two renames).
A running export holds an ``flock`` on its temporary directory; the next export to the same
``OUT`` removes the ``.OUT.partial-*`` leftovers of exports that were killed (no lock held).
Nothing is written outside ``OUT`` and those siblings; the source images are only read, and an
image that now resolves outside the image folder (a symlink swapped in after the scan) is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from labeltool.io.model_io import save_model

if TYPE_CHECKING:
    from torch import Tensor

    from labeltool.data.decisions import LabelState
    from labeltool.data.project import Project
    from labeltool.data.store import ImageRow
    from labeltool.models.backbones import BackboneSpec
    from labeltool.models.heads import LabelerModel


@dataclass(frozen=True)
class DatasetExport:
    """The labeled images to write: the current labels, the class names ``[C]`` and the usable
    image rows by id."""

    state: LabelState
    classes: Sequence[str]
    images: Mapping[int, ImageRow]


@dataclass(frozen=True)
class ModelExport:
    """A round's model to write: the module, its backbone spec, class names, the facts saved
    beside it and the head + loss weights."""

    model: LabelerModel
    spec: BackboneSpec
    classes: Sequence[str]
    info: dict[str, Any]
    weights: Mapping[str, Tensor]

_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def safe_dirname(name: str) -> str:
    """A folder name for a class that is safe on every OS: no separators, control or reserved
    characters, not ``.``/``..``, not a Windows device name, no trailing dot/space."""
    clean = _UNSAFE.sub("_", unicodedata.normalize("NFC", name)).strip().rstrip(". ")
    if not clean or set(clean) <= {"."}:
        clean = "_" + clean.replace(".", "_") if clean else "_unnamed"
    if clean.split(".")[0].upper() in _RESERVED:
        clean = "_" + clean
    return clean[:120]


def neutralize_cell(value: Any) -> Any:
    """Prefix text that a spreadsheet would run as a formula with a quote."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def safe_filename(name: str) -> str:
    """A file name for an exported image: :func:`safe_dirname` of the stem, the extension
    lower-cased with unsafe characters replaced."""
    stem, ext = os.path.splitext(name)
    return safe_dirname(stem) + _UNSAFE.sub("_", ext.lower())


def _unique_dirnames(classes: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for c in classes:
        base = safe_dirname(c)
        name, n = base, 1
        while name.lower() in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name.lower())
        out[c] = name
    return out


def _place(src: Path, dest: Path, link: bool) -> None:
    if link:
        try:
            os.link(src, dest)
            return
        except OSError:
            pass  # other filesystem, or links not allowed: copy instead
    shutil.copy2(src, dest)


def export_project(
    project: Project,
    out: Path,
    *,
    dataset: Callable[[], DatasetExport] | None,
    model: Callable[[], ModelExport] | None,
    link: bool,
    overwrite: bool,
    include_pseudo: bool,
) -> Path:
    """Export into ``out`` atomically; returns ``out``.

    Refuses a non-empty ``out`` unless ``overwrite``; refuses an ``out`` inside the image folder
    (it would be scanned as images), one that holds the image folder or the project directory
    (replacing it would delete them) or lies inside the project directory, and a symlinked
    ``out``. ``include_pseudo=False`` leaves out labels accepted without review. ``dataset`` and
    ``model`` gather what to write (called once the target is checked); None leaves it out.
    """
    out = Path(out).expanduser()
    if out.is_symlink():
        raise ValueError(f"export target {out} is a symbolic link; choose a real folder")
    out = out.resolve()
    _check_target(out, project.image_root.resolve(), project.dir.resolve())
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"export target {out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    if not (dataset or model):
        raise ValueError("nothing to export: choose the dataset, the model or both")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with _locked(out.parent):
            remove_stale_partials(out)
            tmp = _make_partial(out)
            lock = _try_lock(tmp)
    except OSError as e:  # read-only or not ours: a clear refusal, not a traceback
        raise ValueError(f"cannot write the export {out}: {e.strerror or e} ({e.filename})") from None
    try:
        if dataset:
            _write_dataset(project, dataset(), tmp / "dataset", link=link, include_pseudo=include_pseudo)
        if model:
            _write_model(model(), tmp / "model")
        with _locked(out.parent):
            _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return out


def _make_partial(out: Path) -> Path:
    """A new empty ``.OUT.partial-XXXXXXXX`` beside ``out``, with the user's usual permissions
    (``tempfile.mkdtemp`` would make it, and so the export, readable by its owner only)."""
    while True:
        tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
        try:
            tmp.mkdir(mode=0o777)  # the umask applies, as for any folder the user makes
            return tmp
        except FileExistsError:
            continue


def _check_target(out: Path, root: Path, project_dir: Path) -> None:
    if out == root or root in out.parents:
        raise ValueError(f"export target {out} is inside the image folder {root}; choose a folder outside it")
    for what, path in (("image folder", root), ("project directory", project_dir)):
        if out in path.parents:
            raise ValueError(f"export target {out} holds the {what} {path}; choose a folder of its own")
    if out == project_dir or project_dir in out.parents:
        raise ValueError(f"export target {out} is inside the project directory {project_dir}; choose another folder")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive ``flock`` on a directory (serialises leftover clean-up and swaps between exports)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_lock(directory: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on ``directory``, or None when someone else holds it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the ``.OUT.partial-*`` leftovers of killed exports beside ``out`` (a running
    export's folder is locked and kept); returns what was removed."""
    pattern = re.compile(re.escape(f".{out.name}.partial-") + r"[A-Za-z0-9_]{8}(-old)?")
    removed: list[Path] = []
    for p in sorted(out.parent.iterdir()):
        if not pattern.fullmatch(p.name):
            continue
        if p.is_symlink() or not p.is_dir():
            p.unlink(missing_ok=True)
        else:
            fd = _try_lock(p)
            if fd is None:
                continue
            try:
                shutil.rmtree(p)
            finally:
                os.close(fd)
        removed.append(p)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Move the finished export to ``out``; a replaced ``out`` ends up at ``tmp`` and is deleted."""
    if out.exists() or out.is_symlink():
        if not _exchange(tmp, out):
            old = tmp.with_name(tmp.name + "-old")  # a stale leftover if killed right here
            os.rename(out, old)
            os.rename(tmp, out)
            os.rename(old, tmp)
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    else:
        os.rename(tmp, out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_dataset(project: Project, data: DatasetExport, dest: Path, *, link: bool,
                   include_pseudo: bool) -> pd.DataFrame:
    state, classes, images = data.state, list(data.classes), data.images
    dirnames = _unique_dirnames(classes)
    dest.mkdir(parents=True)
    used: set[str] = set()
    rows = []
    root = os.path.realpath(project.image_root)
    for image_id in sorted(state.labels):
        r = images.get(image_id)
        source = state.source[image_id]
        if r is None or (source == "pseudo" and not include_pseudo):
            continue
        label = classes[state.labels[image_id]]
        folder = dirnames[label]
        src = project.image_path(r.relpath)
        if not os.path.realpath(src).startswith(root.rstrip(os.sep) + os.sep):
            raise ValueError(f"image {r.relpath!r} now points outside the image folder {root}; rescan the folder")
        name = safe_filename(os.path.basename(r.relpath))
        stem, ext = os.path.splitext(name)
        n = 0
        while f"{folder}/{name}".lower() in used:
            n += 1
            name = f"{stem}-{image_id}{ext}" if n == 1 else f"{stem}-{image_id}-{n}{ext}"
        used.add(f"{folder}/{name}".lower())
        (dest / folder).mkdir(exist_ok=True)
        _place(src, dest / folder / name, link)
        rows.append({
            "path": f"{folder}/{name}", "label": label, "source": source, "round": state.decided_in.get(image_id),
            "confidence": state.confidence.get(image_id), "source_path": r.relpath, "sha256": r.sha256,
        })
    df = pd.DataFrame(rows, columns=["path", "label", "source", "round", "confidence", "source_path", "sha256"])
    df["round"] = df["round"].astype("Int64")
    df["confidence"] = df["confidence"].astype("Float64")
    df.to_parquet(dest / "manifest.parquet", index=False)
    df.map(neutralize_cell).to_csv(dest / "manifest.csv", index=False)
    return df


def _write_model(data: ModelExport, dest: Path) -> None:
    dest.mkdir(parents=True)
    save_model(dest, data.model, data.spec, list(data.classes), data.info, dict(data.weights))

"""Atomic export of a project: the labeled dataset (one folder per class + manifest) and the model.

Layout of ``OUT``::

    dataset/<class>/<image>        copies (or hard links) of the labeled images
    dataset/manifest.csv           path, label, source, round, confidence, source_path, sha256
                                   (source: seed, reviewed, pseudo, or suggested = a pending
                                   suggestion exported on request, never reviewed)
    dataset/manifest.parquet       the same table
    model/                         see labeltool.io.model_io
    labeltool-export.json          marks the folder as an export (see labeltool.io.export_target)

Everything is written into a temporary sibling directory ``.OUT.partial-*`` and renamed into
place at the end, so a half-written export never exists under ``OUT``; an existing ``OUT`` is
swapped with the new one in one atomic exchange (Linux ``renameat2``; elsewhere two renames).
A running export holds an ``flock`` on its temporary directory; the next export to the same
``OUT`` removes the ``.OUT.partial-*`` leftovers of exports that were killed (no lock held).
Nothing is written outside ``OUT`` and those siblings; the source images are only read, and an
image that now resolves outside the image folder (a symlink swapped in after the scan) is refused.
Each image's sha256 is computed from the bytes copied (or read back from the hard link) and
compared with the one recorded at the last scan, so the manifest always describes the files:
an image changed since the scan refuses the export, naming it. The free space is checked before
copying, and a full disk is one :class:`~labeltool.io.disk_space.NoSpaceError` naming ``OUT``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from labeltool.io.disk_space import NoSpaceError, ensure_free_space, free_bytes, is_no_space
from labeltool.io.export_target import (
    check_replaceable,
    locked,
    remove_stale_partials,
    swap_into_place,
    try_lock,
    write_marker,
)
from labeltool.io.model_io import save_model

if TYPE_CHECKING:
    from torch import Tensor

    from labeltool.data.decisions import LabelState
    from labeltool.data.project import Project
    from labeltool.data.store import ImageRow
    from labeltool.models.backbones import BackboneSpec
    from labeltool.models.heads import LabelerModel


class ChangedSinceScanError(ValueError):
    """Images whose bytes no longer match the sha256 recorded at the last scan (``relpaths``)."""

    def __init__(self, root: Path, relpaths: Sequence[str]) -> None:
        shown = ", ".join(repr(p) for p in relpaths[:10]) + (f" and {len(relpaths) - 10} more" if len(relpaths) > 10 else "")
        super().__init__(
            f"export refused: {len(relpaths)} image(s) in {root} changed since the last scan, so their labels and "
            f"manifest sha256 would be wrong: {shown}; rescan the folder (labeltool embed FOLDER rescans and "
            "re-embeds), check their labels, then export again (nothing was written)")
        self.relpaths = list(relpaths)


PENDING_SOURCE = "suggested"  # the manifest's source of a pending suggestion exported as an unreviewed label


@dataclass(frozen=True)
class PendingLabel:
    """A suggestion still waiting for review, exported as an unreviewed label when asked to."""

    image_id: int
    class_id: int
    confidence: float
    round: int | None


@dataclass(frozen=True)
class DatasetExport:
    """The labeled images to write: the current labels, the class names ``[C]``, the usable
    image rows by id, and the pending suggestions to add as unreviewed labels (source
    :data:`PENDING_SOURCE`; images that have a label keep it)."""

    state: LabelState
    classes: Sequence[str]
    images: Mapping[int, ImageRow]
    pending: Sequence[PendingLabel] = ()


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


def _place(src: Path, dest: Path, link: bool) -> str:
    """Hard-link (``link``, where the filesystem allows) or copy ``src`` to a new ``dest``;
    returns the sha256 of the bytes placed (hashed as they are copied, or read back from the link)."""
    if link:
        try:
            os.link(src, dest)
        except OSError:
            pass  # other filesystem, or links not allowed: copy instead
        else:
            return _sha256_of(dest)
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            digest.update(chunk)
            fout.write(chunk)
    shutil.copystat(src, dest)
    return digest.hexdigest()


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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

    Refuses a non-empty ``out`` unless ``overwrite``, and with it unless ``out`` is a previous
    export (:func:`~labeltool.io.export_target.check_replaceable`); refuses images changed since
    the scan (:class:`ChangedSinceScanError`) and a disk too full (:class:`NoSpaceError`),
    leaving nothing behind; refuses an ``out`` inside the image folder
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
    check_replaceable(out, overwrite)
    if not (dataset or model):
        raise ValueError("nothing to export: choose the dataset, the model or both")
    tmp, lock = _start_partial(out)
    try:
        if dataset:
            _write_dataset(project, dataset(), tmp / "dataset", link=link, include_pseudo=include_pseudo, shown=out)
        if model:
            _write_model(model(), tmp / "model", shown=out)
        write_marker(tmp, [part for part, wanted in (("dataset", dataset), ("model", model)) if wanted])
        with locked(out.parent):
            check_replaceable(out, overwrite)  # again: nothing of the user's came in meanwhile
            swap_into_place(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_no_space(e):
            raise NoSpaceError(out, None, free_bytes(out.parent)) from None
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return out


def _start_partial(out: Path) -> tuple[Path, int | None]:
    """The temporary folder of a new export beside ``out`` and the fd of its lock."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with locked(out.parent):
            remove_stale_partials(out)
            tmp = _make_partial(out)
            return tmp, try_lock(tmp)
    except OSError as e:  # read-only or not ours: a clear refusal, not a traceback
        raise ValueError(f"cannot write the export {out}: {e.strerror or e} ({e.filename})") from None


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


def _chosen(data: DatasetExport, include_pseudo: bool) -> list[tuple[ImageRow, int, str, int | None, float | None]]:
    """``(row, class id, source, round, confidence)`` of each image to write: the labels (without
    the pseudo ones unless ``include_pseudo``), then the pending suggestions of unlabeled images."""
    state = data.state
    out = [(r, state.labels[i], state.source[i], state.decided_in.get(i), state.confidence.get(i))
           for i in sorted(state.labels) if (r := data.images.get(i)) is not None
           and (include_pseudo or state.source[i] != "pseudo")]
    seen = set(state.labels)
    for p in sorted(data.pending, key=lambda p: p.image_id):
        if p.image_id not in seen and (r := data.images.get(p.image_id)) is not None:
            seen.add(p.image_id)
            out.append((r, p.class_id, PENDING_SOURCE, p.round, float(p.confidence)))
    return out


def _write_dataset(project: Project, data: DatasetExport, dest: Path, *, link: bool, include_pseudo: bool,
                   shown: Path) -> pd.DataFrame:
    """Place the labeled images under ``dest/<class>/`` and write the manifest. Each file's
    sha256 is checked as it is placed: files changed since the scan are refused, all named."""
    classes = list(data.classes)
    chosen = _chosen(data, include_pseudo)
    dest.mkdir(parents=True)
    if not link:
        ensure_free_space(dest, sum(r.size_bytes for r, *_ in chosen), shown)
    dirnames = _unique_dirnames(classes)
    used: set[str] = set()
    rows, changed = [], []
    root = os.path.realpath(project.image_root)
    for r, class_id, source, round_id, confidence in chosen:
        image_id, label = r.id, classes[class_id]
        src = project.image_path(r.relpath)
        if not os.path.realpath(src).startswith(root.rstrip(os.sep) + os.sep):
            raise ValueError(f"image {r.relpath!r} now points outside the image folder {root}; rescan the folder")
        path = _free_name(dirnames[label], safe_filename(os.path.basename(r.relpath)), image_id, used)
        (dest / path).parent.mkdir(exist_ok=True)
        try:
            placed_sha = _place(src, dest / path, link)
        except FileNotFoundError:
            placed_sha = None
        if placed_sha is None or placed_sha != r.sha256:
            changed.append(r.relpath if placed_sha else f"{r.relpath} (gone)")
        rows.append({
            "path": path, "label": label, "source": source, "round": round_id, "confidence": confidence,
            "source_path": r.relpath, "sha256": r.sha256,
        })
    if changed:
        raise ChangedSinceScanError(project.image_root, changed)
    return _write_manifest(rows, dest)


def _free_name(folder: str, name: str, image_id: int, used: set[str]) -> str:
    """``folder/name``, made unique (case-insensitively) among ``used`` with the image id."""
    stem, ext = os.path.splitext(name)
    n = 0
    while f"{folder}/{name}".lower() in used:
        n += 1
        name = f"{stem}-{image_id}{ext}" if n == 1 else f"{stem}-{image_id}-{n}{ext}"
    used.add(f"{folder}/{name}".lower())
    return f"{folder}/{name}"


def _write_manifest(rows: list[dict[str, Any]], dest: Path) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["path", "label", "source", "round", "confidence", "source_path", "sha256"])
    df["round"] = df["round"].astype("Int64")
    df["confidence"] = df["confidence"].astype("Float64")
    df.to_parquet(dest / "manifest.parquet", index=False)
    df.map(neutralize_cell).to_csv(dest / "manifest.csv", index=False)
    return df


def _write_model(data: ModelExport, dest: Path, shown: Path) -> None:
    dest.mkdir(parents=True)
    save_model(dest, data.model, data.spec, list(data.classes), data.info, dict(data.weights), shown=shown)

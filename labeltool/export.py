"""Atomic export of a project: the labeled dataset (one folder per class + manifest) and the model.

Layout of ``OUT``::

    dataset/<class>/<image>        copies (or hard links) of the labeled images
    dataset/manifest.csv           path, label, source, round, confidence, source_path, sha256
    dataset/manifest.parquet       the same table
    model/                         see labeltool.model_io

Everything is written into a temporary sibling directory and renamed into place at the end, so
a half-written export never exists under ``OUT``. Nothing is written outside ``OUT``'s parent's
temporary directory and ``OUT`` itself; the source images are only read.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from labeltool.model_io import save_model
from labeltool.train import state_dict_of

if TYPE_CHECKING:
    from labeltool.session import LabelingSession

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
    session: LabelingSession,
    out: Path,
    *,
    dataset: bool = True,
    model: bool = True,
    link: bool = False,
    overwrite: bool = False,
    include_pseudo: bool = True,
) -> Path:
    """Export into ``out`` atomically; returns ``out``.

    Refuses a non-empty ``out`` unless ``overwrite``; refuses an ``out`` inside the image folder
    (it would be scanned as images) or a symlinked ``out``. ``include_pseudo=False`` leaves out
    labels accepted without review.
    """
    out = Path(out).expanduser()
    if out.is_symlink():
        raise ValueError(f"export target {out} is a symbolic link; choose a real folder")
    out = out.resolve()
    root = session.project.image_root
    if out == root or root in out.parents:
        raise ValueError(f"export target {out} is inside the image folder {root}; choose a folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"export target {out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    if not (dataset or model):
        raise ValueError("nothing to export: choose the dataset, the model or both")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        if dataset:
            _write_dataset(session, tmp / "dataset", link=link, include_pseudo=include_pseudo)
        if model:
            _write_model(session, tmp / "model")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_dataset(session: LabelingSession, dest: Path, *, link: bool, include_pseudo: bool) -> pd.DataFrame:
    state = session.label_state()
    classes = session.classes
    dirnames = _unique_dirnames(classes)
    images = {r.id: r for r in session.store.images() if r.status == "ok"}
    dest.mkdir(parents=True)
    used: set[str] = set()
    rows = []
    for image_id in sorted(state.labels):
        r = images.get(image_id)
        source = state.source[image_id]
        if r is None or (source == "pseudo" and not include_pseudo):
            continue
        label = classes[state.labels[image_id]]
        folder = dirnames[label]
        src = session.project.image_path(r.relpath)
        stem, ext = os.path.splitext(os.path.basename(r.relpath))
        name = safe_dirname(stem) + ext.lower()
        if f"{folder}/{name}".lower() in used:
            name = f"{safe_dirname(stem)}-{image_id}{ext.lower()}"
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


def _write_model(session: LabelingSession, dest: Path) -> None:
    dest.mkdir(parents=True)
    ckpt = session.checkpoint()
    model = session.build_model()
    spec = session.backbone_spec
    info = {
        "round": ckpt.round, "loss": ckpt.loss.config(), "head": ckpt.head.config(),
        "classifier": "loss" if ckpt.loss.has_classifier else "prototypes",
        "train_config": ckpt.meta.get("train_config"), "project": str(session.project.image_root.name),
    }
    save_model(dest, model, spec, session.classes, info, state_dict_of(ckpt.head, ckpt.loss))

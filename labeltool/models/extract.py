"""Batched backbone feature extraction: PyTorch (CPU, or CUDA with autocast and channels_last) or an
inference runtime on the CPU (:mod:`labeltool.models.runtimes`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from labeltool.config import EXPORT_MIN_IMAGES
from labeltool.data.decode import load_image_bytes
from labeltool.data.features import FeatureCache
from labeltool.data.scan import ImageDecodeError, load_image
from labeltool.models.backbones import Backbone, make_preprocess
from labeltool.models.runtimes import exported_backbone, load_features_fn, onnx_file, resolve_runtime

Progress = Callable[[int, int], None]


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as asked."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(preference)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} was requested but no CUDA GPU is available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {preference!r}; use auto, cpu or cuda[:N]")
    return dev


class _ImageFiles(Dataset[tuple[int, torch.Tensor, str]]):
    """Decodes and preprocesses image files; a file that fails gives an empty tensor + reason.

    Each file is read once; with ``expected_hashes`` its bytes are hashed and a file whose
    content no longer has the scanned hash fails, so features always belong to the bytes decoded.
    """

    def __init__(self, paths: Sequence[Path], preprocess: Callable, size: int,
                 expected_hashes: Sequence[str] | None = None) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.size = size
        self.expected = None if expected_hashes is None else list(expected_hashes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        try:
            return i, self.preprocess(self._decode(i)), ""
        except (ImageDecodeError, OSError, ValueError) as e:
            return i, torch.zeros(3, self.size, self.size), str(e) or type(e).__name__

    def _decode(self, i: int) -> Image.Image:
        path = self.paths[i]
        if self.expected is None:
            return load_image(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageDecodeError(path, f"cannot read file ({e.strerror or e})") from None
        sha = hashlib.sha256(data).hexdigest()
        if sha != self.expected[i]:
            raise ImageDecodeError(path, f"changed since it was scanned (sha256 {self.expected[i][:12]}... then, "
                                         f"{sha[:12]}... now); rescan to pick up the new content")
        return load_image_bytes(data, path)


def _collate(items: list[tuple[int, torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    idx = torch.tensor([i for i, _, _ in items], dtype=torch.int64)
    return idx, torch.stack([x for _, x, _ in items]), [e for _, _, e in items]


WORKER_MEMORY_BYTES = 512 * 1024**2  # one decoding process: interpreter, torch, prefetched batches


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _available_memory() -> int | None:
    """Bytes of memory available for new processes (``MemAvailable``), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def worker_bound() -> int:
    """Most decoding processes worth running here: one per usable CPU, fewer when memory is short."""
    bound = usable_cpus()
    memory = _available_memory()
    if memory is not None:
        bound = min(bound, memory // WORKER_MEMORY_BYTES)
    return max(1, bound)


def resolve_workers(requested: int | None, n_images: int, batch_size: int) -> tuple[int, str | None]:
    """Decoding processes to use and, when ``requested`` was more than :func:`worker_bound`, a note
    saying it was clamped. ``None`` picks a default (none for small jobs); negative is refused."""
    if requested is None:
        return (0 if n_images < 4 * batch_size else min(4, max(1, usable_cpus() - 1))), None
    if requested < 0:
        raise ValueError(f"--workers must be 0 or more, got {requested}")
    bound = worker_bound()
    if requested <= bound:
        return requested, None
    memory = _available_memory()
    shown = "unknown" if memory is None else f"{memory / 1024**3:.1f} GiB"
    return bound, (f"--workers {requested} is more than this machine can run ({usable_cpus()} CPUs, {shown} "
                   f"memory available); using {bound} decoding processes")


@dataclass
class ExtractionResult:
    """What an extraction run did: rows computed, the files that failed (path → reason) and notes
    (e.g. a worker count that was clamped)."""

    computed: int
    failed: dict[str, str]
    device: str
    notes: list[str] = field(default_factory=list)
    runtime: str = "torch"


@dataclass(frozen=True)
class RuntimeChoice:
    """How to run the backbone: ``runtime`` (``torch`` or a registered one, see
    :mod:`labeltool.models.runtimes`) and, for a registered one, the folder its ONNX export is kept
    in and the key it is kept under (the feature-cache key of the backbone's weights)."""

    runtime: str = "torch"
    export_dir: Path | None = None
    key: str = ""


def _torch_features(backbone: Backbone, device: torch.device) -> Callable[[torch.Tensor], np.ndarray]:
    # channels_last pays on both: about 1.5x on a 2-core CPU for EfficientNet-Lite0 at 224 px
    model = backbone.to(device).eval().to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> np.ndarray:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
            return model(x).float().cpu().numpy()

    return run


def features_fn(backbone: Backbone, device: torch.device,
                choice: RuntimeChoice = RuntimeChoice()) -> Callable[[torch.Tensor], np.ndarray]:
    """Preprocessed images ``[B, 3, S, S]`` → features ``[B, D]`` float32 under ``choice``
    (exporting the backbone to ONNX once when a registered runtime runs it)."""
    if choice.runtime == "torch":
        return _torch_features(backbone, device)
    if choice.export_dir is None or not choice.key:
        raise ValueError(f"runtime {choice.runtime!r} needs a folder and a key for the backbone's ONNX export")
    path = exported_backbone(backbone, choice.export_dir, choice.key)
    run = load_features_fn(choice.runtime, path, torch.get_num_threads())
    return lambda x: run(x.numpy())


def iter_features(
    backbone: Backbone,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    device: torch.device | None = None,
    num_workers: int | None = None,
    expected_hashes: Sequence[str] | None = None,
    runtime: RuntimeChoice = RuntimeChoice(),
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Yield ``(indices [b], features [b, D] float32, errors [b])`` batch by batch.

    ``errors[j]`` is empty when image ``indices[j]`` decoded; otherwise its features are garbage
    and must be dropped. With ``expected_hashes`` (aligned with ``paths``) each file's bytes are
    hashed as read and a file whose hash differs fails. ``num_workers`` is clamped to
    :func:`worker_bound`. PyTorch runs with channels_last, and fp16 autocast on CUDA; ``runtime``
    may name an inference runtime for the CPU instead.
    """
    device = device or pick_device()
    num_workers, _ = resolve_workers(num_workers, len(paths), batch_size)
    loader = DataLoader(
        _ImageFiles(paths, make_preprocess(backbone.spec), backbone.spec.input_size, expected_hashes),
        batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )
    run = features_fn(backbone, device, runtime)
    for idx, x, errors in loader:
        yield idx.numpy(), run(x), errors


def choose_runtime(requested: str, device: torch.device, n_images: int, export_dir: Path | None,
                   key: str) -> RuntimeChoice:
    """The runtime for extracting ``n_images``: ``requested`` resolved for ``device``; ``auto``
    keeps PyTorch when no export is cached yet and the job is too small to pay for one
    (:data:`~labeltool.config.EXPORT_MIN_IMAGES`) or there is no folder to keep it in."""
    name = resolve_runtime(requested, device)
    if name == "torch":
        return RuntimeChoice()
    if export_dir is None:
        if requested == "auto":
            return RuntimeChoice()
        raise ValueError(f"runtime {name!r} needs a folder for the backbone's ONNX export")
    if requested == "auto" and n_images < EXPORT_MIN_IMAGES and not onnx_file(export_dir, key).exists():
        return RuntimeChoice()
    return RuntimeChoice(name, export_dir, key)


def _exported(backbone: Backbone, choice: RuntimeChoice, *, fall_back: bool,
              on_stage: Callable[[str], None] | None = None) -> tuple[RuntimeChoice, str | None]:
    """``choice`` with its ONNX export in place; when the export fails and ``fall_back``, PyTorch
    and a note saying why (a folder that cannot be written, an architecture the exporter refuses)."""
    if choice.runtime == "torch" or choice.export_dir is None:
        return choice, None
    if on_stage is not None and not onnx_file(choice.export_dir, choice.key).exists():
        on_stage(f"Preparing {backbone.spec.name} for {choice.runtime} (once per project; "
                 "about 10-30 s on a laptop CPU)…")
    try:
        exported_backbone(backbone, choice.export_dir, choice.key)
    except Exception as e:  # the exporter raises many types; any of them means "run in PyTorch"
        if not fall_back:
            raise
        return RuntimeChoice(), (f"could not export {backbone.spec.name} for {choice.runtime} "
                                 f"({type(e).__name__}: {str(e)[:200]}); extracting with PyTorch")
    return choice, None


def extract_to_cache(
    backbone: Backbone,
    cache: FeatureCache,
    items: Sequence[tuple[str, Path]],
    *,
    batch_size: int = 32,
    device: torch.device | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
    runtime: str = "torch",
    export_dir: Path | None = None,
    limit: int | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ExtractionResult:
    """Compute features for ``items`` ``(sha256, path)`` not yet in ``cache`` and append them.

    Each file is hashed as it is read: features are stored only under the hash of the bytes
    they were computed from, and a file changed since its scan is reported in ``failed`` (the
    caller rescans). Each batch is written as soon as it is computed, so an interrupted run
    keeps its progress. ``runtime`` (``auto``, ``torch`` or a registered runtime) runs the
    backbone; a registered runtime keeps the backbone's ONNX export in ``export_dir`` under the
    cache's key (see :func:`choose_runtime`). ``ExtractionResult.runtime`` says which ran.
    ``limit`` computes only the first ``limit`` missing items, in ``items``' order; ``on_stage``
    hears of a step without progress counts (the one-off export).
    """
    device = device or pick_device()
    todo_hashes = set(cache.missing([h for h, _ in items]))
    todo: list[tuple[str, Path]] = []
    for h, p in items:
        if h in todo_hashes:
            todo.append((h, p))
            todo_hashes.discard(h)
    todo = todo if limit is None else todo[: max(0, limit)]
    workers, note = resolve_workers(num_workers, len(todo), batch_size)
    choice = choose_runtime(runtime, device, len(todo), export_dir, cache.key) if todo else RuntimeChoice()
    choice, export_note = _exported(backbone, choice, fall_back=runtime == "auto", on_stage=on_stage)
    notes = [n for n in (note, export_note) if n]
    failed: dict[str, str] = {}
    done = 0
    if progress:
        progress(0, len(todo))
    for idx, feats, errors in iter_features(
        backbone, [p for _, p in todo], batch_size=batch_size, device=device, num_workers=workers,
        expected_hashes=[h for h, _ in todo], runtime=choice,
    ):
        keep = [j for j, e in enumerate(errors) if not e]
        for j, e in enumerate(errors):
            if e:
                failed[str(todo[int(idx[j])][1])] = e
        if keep:
            cache.append([todo[int(idx[j])][0] for j in keep], feats[keep])
        done += len(idx)
        if progress:
            progress(done, len(todo))
    return ExtractionResult(computed=done - len(failed), failed=failed, device=str(device),
                            notes=notes, runtime=choice.runtime)

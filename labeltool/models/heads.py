"""Projection head trained on cached backbone features, the pool pass (the head over every
cached feature row, in its folded inference form where it pays), and the prototype classifier."""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from labeltool.losses.base import EmbeddingLoss


class ProjectionHead(nn.Module):
    """MLP ``[B, F] -> [B, D]`` on L2-normalised backbone features.

    ``Linear(F, H) → BatchNorm → ReLU → Dropout → Linear(H, D)``; the output is left
    unnormalised, each loss normalises as its formula requires.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.hidden_dim, self.dropout = in_dim, out_dim, hidden_dim, dropout
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, features: Tensor) -> Tensor:
        """Embeddings ``[B, D]`` of backbone features ``[B, F]``."""
        return self.net(F.normalize(features.float(), dim=1))

    def config(self) -> dict[str, float | int]:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "hidden_dim": self.hidden_dim, "dropout": self.dropout}


PRECISIONS = ("float32", "bfloat16", "auto")


def _cpu_probe(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def native_bf16_available() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in its own instructions: AMX tiles (Intel
    Sapphire Rapids on, about 8x its float32 rate) or AVX512-BF16 (AMD Zen 4 on, Intel Cooper
    Lake; about 2.8x on a 2-core EPYC). Without them bfloat16 is emulated and slower than float32."""
    return _cpu_probe("_is_amx_tile_supported") or _cpu_probe("_is_avx512_bf16_supported")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"float32"`` or ``"bfloat16"`` for a pool pass on ``device``: ``"auto"`` is bfloat16 on a
    CPU with native bfloat16 products (:func:`native_bf16_available`), float32 elsewhere (a GPU's
    float32 pass is bound by the copy to it, not the math)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown embedding precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if device.type == "cpu" and native_bf16_available() else "float32"
    return precision


@dataclass(frozen=True)
class FoldedHead:
    """An eval-mode :class:`ProjectionHead` as two affine maps, BatchNorm folded into the first:
    ``relu((x · W1ᵀ) / |x| + b1) · W2ᵀ + b2`` for features ``x [B, F]``.

    ``w1 [H, F]`` is kept in ``w1.dtype`` (bfloat16 for the fast pass: the raw rows, converted
    to that dtype, are multiplied unnormalised and each product row is scaled by its row's
    inverse norm after); ``b1 [H]``, ``w2 [D, H]``, ``b2 [D]`` stay float32, as does everything
    after the first product. On CIFAR-10 and Fashion-MNIST features the bfloat16 form's
    embeddings differed from the module's by about 1e-3 (relative norm of the difference).
    """

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor

    def __call__(self, features: Tensor) -> Tensor:
        """Embeddings ``[B, D]`` float32 of ``features [B, F]`` (any float dtype)."""
        inv = 1.0 / torch.linalg.vector_norm(features, dim=1, keepdim=True, dtype=torch.float32).clamp_min(1e-12)
        z = (features.to(self.w1.dtype) @ self.w1.T).float()
        h = torch.addcmul(self.b1, z, inv).relu_()
        return torch.addmm(self.b2, h, self.w2.T)


@torch.no_grad()
def fold_head(head: ProjectionHead, dtype: torch.dtype = torch.bfloat16) -> FoldedHead:
    """The inference form of ``head`` (its BatchNorm's running statistics folded in; dropout is
    the identity in eval mode), with the first layer's weights in ``dtype``."""
    lin1, bn, lin2 = head.net[0], head.net[1], head.net[4]
    if not (isinstance(lin1, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and isinstance(lin2, nn.Linear)):
        raise TypeError(f"not a projection head's layer layout: {head.net}")
    mean = bn.running_mean if bn.running_mean is not None else torch.zeros(head.hidden_dim)
    var = bn.running_var if bn.running_var is not None else torch.ones(head.hidden_dim)
    gamma = bn.weight if bn.weight is not None else torch.ones(head.hidden_dim)
    beta = bn.bias if bn.bias is not None else torch.zeros(head.hidden_dim)
    scale = gamma.float() / torch.sqrt(var.float() + bn.eps)
    w1 = (lin1.weight.float() * scale[:, None]).to(dtype).contiguous()
    b1 = (lin1.bias.float() - mean.float()) * scale + beta.float()
    return FoldedHead(w1, b1.contiguous(), lin2.weight.detach().float().clone(), lin2.bias.detach().float().clone())


EMBED_CHUNK = 8192  # rows per step of a pool pass: [8192, 1280] float16 is 21 MB


@torch.inference_mode()
def pool_pass(head: ProjectionHead, features: Any, device: torch.device, *, chunk: int = EMBED_CHUNK,
              precision: str = "float32") -> np.ndarray:
    """Embeddings ``[N, D]`` float32 of ``features [N, F]`` (array, memmap or row view of one).

    ``chunk`` rows at a time go to ``device`` in their own dtype (a float16 cache is never copied
    to float32 whole), and the pages of a memory-mapped ``features`` leave the process after their
    chunk. ``precision`` (:func:`resolve_precision`): ``"float32"`` runs the module as trained,
    ``"bfloat16"`` its :func:`fold_head` form.
    """
    features = features.features if isinstance(features, ReleasedReads) else features
    mode = resolve_precision(precision, device)
    head = head.to(device).eval()
    run: Callable[[Tensor], Tensor] = fold_head(head) if mode == "bfloat16" else head
    n = features.shape[0]
    out = np.empty((n, head.out_dim), dtype=np.float32)
    staging: np.ndarray | None = None
    for s in range(0, n, chunk):
        block = features[s : s + chunk]
        staging = _staged(block, staging)
        x = torch.from_numpy(staging[: len(block)]).to(device)
        out[s : s + len(block)] = run(x).float().cpu().numpy()
        release_mapped(block)
    head.cpu()
    return out


def _staged(block: np.ndarray, staging: np.ndarray | None) -> np.ndarray:
    """``block [r, F]`` copied into a reusable writable buffer (float16 and float32 keep their
    dtype, anything else becomes float32); a new buffer when ``staging`` is too small or another dtype."""
    dtype = block.dtype if block.dtype in (np.float16, np.float32) else np.dtype(np.float32)
    if staging is None or staging.dtype != dtype or staging.shape[0] < block.shape[0] or staging.shape[1:] != block.shape[1:]:
        staging = np.empty(block.shape, dtype=dtype)
    np.copyto(staging[: block.shape[0]], block, casting="same_kind")
    return staging


def _mapping(x: Any) -> mmap.mmap | None:
    """The read-only memory map under ``x`` (an array view of one, or a row view whose ``matrix``
    is one), or None."""
    found: Any = getattr(x, "matrix", x) if not isinstance(x, np.ndarray) else x
    while found is not None and not isinstance(found, mmap.mmap):
        found = getattr(found, "base", None)
    if found is None or not hasattr(mmap, "MADV_DONTNEED") or not memoryview(found).readonly:
        return None
    return found


def release_mapped(block: Any, whole: bool = False) -> None:
    """Drop the pages under ``block`` (a C-contiguous view into a read-only memory-mapped file;
    ``whole``: every page of its map) from this process: they stay in the page cache, so reading
    them again costs no disk I/O, but the process's resident set no longer counts them. Anything
    else is left alone."""
    mapped = _mapping(block)
    if mapped is None or len(mapped) == 0:
        return
    first, stop = 0, len(mapped)
    if not whole:
        if not (isinstance(block, np.ndarray) and block.size and block.flags.c_contiguous):
            return
        start = block.ctypes.data - np.frombuffer(mapped, dtype=np.uint8).ctypes.data
        first, stop = start // mmap.PAGESIZE * mmap.PAGESIZE, min(start + block.nbytes, len(mapped))
    with contextlib.suppress(OSError, ValueError):
        mapped.madvise(mmap.MADV_DONTNEED, first, stop - first)


# Random rows read between two releases: each may map a whole page-cache folio (up to 2 MB). A
# gather of 20,000 of a 1M-row file's rows peaked 35 MB above its start, against the file's 2.4 GB.
ROWS_PER_READ = 256


class ReleasedReads:
    """``features [N, F]``, a memory-mapped array or a row view of one, read as copies, every page
    a read mapped into this process dropped after it. Reading a few thousand random rows of a
    memory map otherwise maps most of the file (the kernel maps the large page-cache folios around
    each row), so a 1M-image pool's 2.4 GB would stay in the resident set; the pages stay cached."""

    def __init__(self, features: Any) -> None:
        self.features = features
        self.shape, self.ndim, self.dtype = tuple(features.shape), 2, features.dtype

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, key: Any) -> np.ndarray:
        """``features[key]`` as an array of its own; rows ``key`` (integers) are read
        :data:`ROWS_PER_READ` at a time, so at most that many folios are mapped at once."""
        if isinstance(key, slice):
            out = np.array(self.features[key])
            release_mapped(self.features, whole=True)
            return out
        rows = np.asarray(key)
        out = np.empty((rows.size, *self.shape[1:]), dtype=self.dtype)
        for s in range(0, rows.size, ROWS_PER_READ):
            out[s : s + ROWS_PER_READ] = self.features[rows[s : s + ROWS_PER_READ]]
            release_mapped(self.features, whole=True)
        return out.reshape(*rows.shape, *self.shape[1:])


def released_reads(features: Any) -> Any:
    """``features`` as :class:`ReleasedReads` when they are memory-mapped, else unchanged."""
    if isinstance(features, ReleasedReads) or _mapping(features) is None:
        return features
    return ReleasedReads(features)


class PrototypeClassifier(nn.Module):
    """Nearest-class-mean classifier: logits ``[B, C]`` = ``scale`` · cos(embedding, prototype_c).

    Used for export and prediction when the loss has no classifier of its own (triplet,
    contrastive, ...). Prototypes are the normalised means of the normalised labeled embeddings.
    """

    prototypes: Tensor  # [C, D] unit rows, a registered buffer

    def __init__(self, prototypes: Tensor, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("prototypes", F.normalize(prototypes.float(), dim=1))
        self.scale = float(scale)

    @staticmethod
    def from_embeddings(embeddings: Tensor, labels: Tensor, num_classes: int, scale: float = 16.0) -> PrototypeClassifier:
        """Prototypes from labeled embeddings ``[N, D]`` and labels ``[N]`` (classes with no
        example get a zero prototype, so they are never predicted with confidence)."""
        emb = F.normalize(embeddings.float(), dim=1)
        protos = torch.zeros(num_classes, emb.shape[1])
        protos.index_add_(0, labels.long(), emb)
        return PrototypeClassifier(protos, scale)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.scale * F.normalize(embeddings.float(), dim=1) @ self.prototypes.T


class LossLogits(nn.Module):
    """Wraps a loss with a classifier so it can be called as ``embeddings [B, D] -> logits [B, C]``."""

    def __init__(self, loss: EmbeddingLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.loss.logits(embeddings)


class LabelerModel(nn.Module):
    """Backbone + head + classifier: preprocessed images ``[B, 3, S, S]`` → probabilities ``[B, C]``."""

    def __init__(self, backbone: nn.Module, head: ProjectionHead, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head, self.classifier = backbone, head, classifier

    def forward(self, images: Tensor) -> Tensor:
        return torch.softmax(self.classifier(self.head(self.backbone(images))).float(), dim=1)

"""Association-walk class probabilities for unlabeled images (Haeusser et al., "Learning by Association").

With labeled embeddings ``A [L, D]`` (classes ``y [L]``) and unlabeled embeddings ``B [U, D]``,
``M = A·Bᵀ / T``. The walk from an unlabeled image ``b`` to the labeled set is
``P^{ba}(b → a) = softmax over labeled a of M[a, b]``, and

    P(class c | b) = Σ_{a labeled, y_a = c} P^{ba}(b → a).

Round-trip consistency. The forward step ``P^{ab}(a → b) = softmax over unlabeled b of M[a, b]``
normalises over the whole unlabeled pool. Start a round trip ``a → b → a'`` at a labeled image
drawn class-balanced (a class uniformly, then an image of it uniformly) and condition on the walk
passing through ``b``. The probability that it *started* in class ``c`` is

    R(c | b) = Σ_{a ∈ c} P^{ab}(a → b) / |L_c|   normalised over the classes,

and, by the Markov property, it *ends* in class ``c`` with probability ``P(c | b)``. So
``P(c | b) · R(c | b)`` is the probability that the round trip through ``b`` leaves from and comes
back to class ``c``: the walk confidence with ``walk_roundtrip``.

Memory stays ``O(chunk_size × labeled_chunk_size)``: unlabeled rows are read in chunks (a
``np.memmap`` is never loaded whole) and the labeled set is streamed in blocks with a running
log-sum-exp per class, so pools of 100k+ images and large labeled sets both fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

# Default bound on the elements of one logits block (unlabeled rows x labeled rows).
WALK_BLOCK = 1 << 22


def load_rows(
    x: np.ndarray, rows: np.ndarray | slice, *, normalize: bool, name: str = "embeddings"
) -> np.ndarray:
    """Rows of ``x [N, D]`` as C-contiguous float32 ``[r, D]``, L2-normalised if asked.

    Raises ``ValueError`` on NaN/inf. Zero rows stay zero under normalisation.
    """
    out = np.ascontiguousarray(x[rows], dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    if normalize and out.size:
        norm = np.sqrt(np.einsum("rd,rd->r", out, out))
        out /= np.maximum(norm, 1e-12)[:, None]
    return out


class _ClassLogSumExp:
    """Running ``Σ_{a ∈ c} exp(logit[r, a])`` per class over labeled blocks, kept as (max, scaled sum).

    Labeled columns are sorted by class, so one block's per-class sums are a ``reduceat`` over runs.
    """

    def __init__(self, rows: int, num_classes: int) -> None:
        self.m = np.full(rows, -np.inf)
        self.s = np.zeros((rows, num_classes))

    def add(self, logits: np.ndarray, starts: np.ndarray, run_classes: np.ndarray) -> None:
        """Fold in ``logits [r, lb]`` (float32, overwritten) whose class runs begin at ``starts``."""
        new_m = np.maximum(self.m, logits.max(axis=1))
        self.s *= np.exp(self.m - new_m)[:, None]
        logits -= new_m.astype(np.float32)[:, None]
        np.exp(logits, out=logits)
        self.s[:, run_classes] += np.add.reduceat(logits, starts, axis=1, dtype=np.float64)
        self.m = new_m


def _check(
    unlabeled: np.ndarray,
    labeled: np.ndarray,
    labeled_classes: np.ndarray,
    num_classes: int,
    temperature: float,
) -> None:
    if unlabeled.ndim != 2 or labeled.ndim != 2 or unlabeled.shape[1] != labeled.shape[1]:
        raise ValueError(
            f"unlabeled [U, D] and labeled [L, D] must be 2-D with the same D, got {unlabeled.shape} "
            f"and {labeled.shape}"
        )
    if labeled.shape[0] == 0:
        raise ValueError("the association walk needs at least one labeled image")
    if labeled_classes.shape != (labeled.shape[0],):
        raise ValueError(
            f"labeled_classes must have shape ({labeled.shape[0]},), got {labeled_classes.shape}"
        )
    if labeled_classes.min() < 0 or labeled_classes.max() >= num_classes:
        raise ValueError(f"labeled_classes must lie in [0, {num_classes})")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature}")


def iter_walk_scores(
    unlabeled: np.ndarray,
    labeled: np.ndarray,
    labeled_classes: np.ndarray,
    num_classes: int,
    *,
    rows: np.ndarray | None = None,
    normalize: bool = False,
    temperature: float = 1.0,
    roundtrip: bool = False,
    chunk_size: int = 1024,
    labeled_chunk_size: int | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Walk scores chunk by chunk: yields ``(start, P [r, C], R [r, C] or None)``.

    Args:
        unlabeled: ``[N, D]`` embeddings (may be a memmap); ``rows`` picks the unlabeled rows
            (default: all), read ``chunk_size`` at a time.
        labeled: ``[L, D]`` labeled embeddings; ``labeled_classes [L]`` their classes in ``[0, C)``.
        normalize: L2-normalise both sides first (cosine similarity); otherwise raw dot products.
        temperature: ``T`` in ``M = A·Bᵀ / T``.
        roundtrip: also compute the round-trip start-class probabilities ``R`` (one extra pass).
        labeled_chunk_size: labeled rows per block (default: keeps blocks near ``WALK_BLOCK``).

    ``start`` indexes the selected rows; ``P`` rows sum to 1 over classes (classes without a
    labeled image get 0). ``R`` rows sum to 1 as well.
    """
    sel = np.arange(unlabeled.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    labeled_classes = np.asarray(labeled_classes, dtype=np.int64)
    _check(unlabeled, labeled, labeled_classes, num_classes, temperature)
    if chunk_size < 1 or (labeled_chunk_size is not None and labeled_chunk_size < 1):
        raise ValueError("chunk sizes must be >= 1")
    yield from walk_chunk_scores(
        unlabeled, labeled, labeled_classes, num_classes, rows=sel, normalize=normalize,
        temperature=temperature, roundtrip=roundtrip, chunk_size=chunk_size,
        labeled_chunk_size=labeled_chunk_size,
    )


def walk_chunk_scores(
    unlabeled: np.ndarray,
    labeled: np.ndarray,
    labeled_classes: np.ndarray,
    num_classes: int,
    *,
    rows: np.ndarray,
    normalize: bool,
    temperature: float,
    roundtrip: bool,
    chunk_size: int,
    labeled_chunk_size: int | None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """:func:`iter_walk_scores` on inputs already checked (``rows [U]`` int64, ``labeled_classes [L]``
    int64 in ``[0, C)``, ``L >= 1``, ``temperature > 0``, chunk sizes >= 1)."""
    blocks = _LabeledBlocks(
        labeled, labeled_classes, normalize=normalize, temperature=temperature,
        block=labeled_chunk_size or max(1, WALK_BLOCK // chunk_size),
    )

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, rows.shape[0], chunk_size):
            yield s, load_rows(unlabeled, rows[s : s + chunk_size], normalize=normalize)

    log_z = blocks.forward_log_norm(b for _, b in chunks()) if roundtrip else None
    counts = np.bincount(labeled_classes, minlength=num_classes).astype(np.float64)
    for s, b in chunks():
        p, r = blocks.class_scores(b, num_classes, log_z, counts)
        yield s, p, r


class _LabeledBlocks:
    """Labeled embeddings sorted by class and cut into blocks of ``block`` rows.

    ``a [L, D]`` float32 (normalised with ``normalize``), ``runs``: per block its start, the
    starts of its class runs within the block and their classes.
    """

    def __init__(
        self, labeled: np.ndarray, labeled_classes: np.ndarray, *, normalize: bool, temperature: float, block: int
    ) -> None:
        order = np.argsort(labeled_classes, kind="stable")  # labeled sorted by class
        self.a = load_rows(labeled, order, normalize=normalize, name="labeled embeddings")
        cls_sorted = labeled_classes[order]
        self.block = block
        self.runs: list[tuple[int, np.ndarray, np.ndarray]] = []
        for ls in range(0, self.a.shape[0], block):
            bc = cls_sorted[ls : ls + block]
            st = np.flatnonzero(np.r_[True, bc[1:] != bc[:-1]])
            self.runs.append((ls, st, bc[st]))
        self.inv_t = np.float32(1.0 / float(temperature))

    def logits(self, b: np.ndarray, ls: int) -> np.ndarray:
        """``M`` for unlabeled rows ``b [r, D]`` against the block starting at ``ls``: ``[r, lb]`` float32."""
        out = b @ self.a[ls : ls + self.block].T
        out *= self.inv_t
        return out

    def forward_log_norm(self, unlabeled_chunks: Iterable[np.ndarray]) -> np.ndarray:
        """``[L]`` float32 ``log Σ_{b unlabeled} exp(M[a, b])`` for every labeled ``a``: the forward
        step's normaliser, accumulated over the chunks ``[r, D]`` of the unlabeled pool."""
        n_lab = self.a.shape[0]
        zm = np.full(n_lab, -np.inf)
        zs = np.zeros(n_lab)
        for b in unlabeled_chunks:
            for ls, _, _ in self.runs:
                lg = self.logits(b, ls)
                sl = slice(ls, ls + lg.shape[1])
                new_m = np.maximum(zm[sl], lg.max(axis=0))
                lg -= new_m.astype(np.float32)[None, :]
                np.exp(lg, out=lg)
                zs[sl] = zs[sl] * np.exp(zm[sl] - new_m) + lg.sum(axis=0, dtype=np.float64)
                zm[sl] = new_m
        return (zm + np.log(zs)).astype(np.float32)

    def class_scores(
        self, b: np.ndarray, num_classes: int, log_z: np.ndarray | None, counts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``P [r, C]`` and, given ``log_z``, ``R [r, C]`` for the unlabeled rows ``b [r, D]``.

        ``counts [C]`` float64 labeled images per class (for the class-balanced start).
        """
        back = _ClassLogSumExp(b.shape[0], num_classes)
        arrive = _ClassLogSumExp(b.shape[0], num_classes) if log_z is not None else None
        for ls, st, rc in self.runs:
            lg = self.logits(b, ls)
            if arrive is not None and log_z is not None:
                arrive.add(lg - log_z[None, ls : ls + lg.shape[1]], st, rc)
            back.add(lg, st, rc)
        p = back.s / back.s.sum(axis=1, keepdims=True)
        if arrive is None:
            return p, None
        bal = np.divide(arrive.s, counts[None, :], out=np.zeros_like(arrive.s), where=counts[None, :] > 0)
        return p, bal / bal.sum(axis=1, keepdims=True)


def _stack_walk(
    roundtrip: bool, unlabeled: np.ndarray, labeled: np.ndarray, labeled_classes: np.ndarray, num_classes: int,
    **kwargs: Any,
) -> np.ndarray:
    """Concatenate the per-chunk walk probabilities (or round-trip scores) into ``[U, C]``."""
    parts: list[np.ndarray] = []
    for _, p, r in iter_walk_scores(unlabeled, labeled, labeled_classes, num_classes, roundtrip=roundtrip, **kwargs):
        part = r if roundtrip else p
        if part is not None:
            parts.append(part)
    return np.concatenate(parts) if parts else np.zeros((0, num_classes))


def walk_class_probs(
    unlabeled: np.ndarray,
    labeled: np.ndarray,
    labeled_classes: np.ndarray,
    num_classes: int,
    *,
    rows: np.ndarray | None = None,
    normalize: bool = False,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    labeled_chunk_size: int | None = None,
) -> np.ndarray:
    """``P(class c | b) = Σ_{a: y_a = c} P^{ba}(b → a)`` for every unlabeled row: ``[U, C]`` float64.

    See :func:`iter_walk_scores` for the arguments; rows sum to 1 over classes.
    """
    return _stack_walk(False, unlabeled, labeled, labeled_classes, num_classes, rows=rows, normalize=normalize,
                       temperature=temperature, chunk_size=chunk_size, labeled_chunk_size=labeled_chunk_size)


def walk_roundtrip(
    unlabeled: np.ndarray,
    labeled: np.ndarray,
    labeled_classes: np.ndarray,
    num_classes: int,
    *,
    rows: np.ndarray | None = None,
    normalize: bool = False,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    labeled_chunk_size: int | None = None,
) -> np.ndarray:
    """Round-trip start-class probabilities ``R(c | b)`` (module docstring): ``[U, C]`` float64."""
    return _stack_walk(True, unlabeled, labeled, labeled_classes, num_classes, rows=rows, normalize=normalize,
                       temperature=temperature, chunk_size=chunk_size, labeled_chunk_size=labeled_chunk_size)

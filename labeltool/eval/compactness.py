"""Angular compactness metrics of an embedding ("Angular Learning"; W-Softmax paper).

All angles are in radians. Inputs may be torch tensors or numpy arrays; they are validated once
by the public functions and computed in float64.

- W-Inter  = mean_{i≠j} ∠(W_i, W_j) over class weight vectors (larger: classes spread apart);
- C-Inter  = mean_{i≠j} ∠(c_i, c_j) over class feature centers;
- WC-Intra = mean_j ∠(c_j, W_j) between each class center and its own weight (smaller: tighter).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["c_inter", "class_centers", "compactness_metrics", "w_inter", "wc_intra"]


def _matrix(x: Any, name: str, min_rows: int = 1) -> Tensor:
    """``x`` as a finite float64 CPU tensor ``[N, D]`` with at least ``min_rows`` rows."""
    t = x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(device="cpu", dtype=torch.float64)
    if t.ndim != 2 or t.shape[1] < 1:
        raise ValueError(f"{name}: expected a 2-D array [N, D], got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} rows, got {t.shape[0]}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t


def _labels(labels: Any, n: int) -> Tensor:
    t = labels.detach().cpu() if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"labels: expected shape [{n}], got {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"labels: expected integer class ids, got dtype {t.dtype}")
    return t.long()


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _mean_pairwise_angle(x: Tensor) -> float:
    """Mean angle over ordered pairs ``i ≠ j`` of the rows of ``x`` ``[N, D]`` (N ≥ 2)."""
    u = _unit(x)
    ang = torch.arccos((u @ u.T).clamp(-1.0, 1.0))
    n = x.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    return float(ang[off].mean())


def _mean_matched_angle(a: Tensor, b: Tensor) -> float:
    """Mean over ``j`` of the angle between ``a_j`` and ``b_j`` (both ``[N, D]``)."""
    cos = (_unit(a) * _unit(b)).sum(dim=1).clamp(-1.0, 1.0)
    return float(torch.arccos(cos).mean())


def _centers(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(classes [C'], centers [C', D])`` over rows with ``labels >= 0``, classes ascending."""
    keep = labels >= 0
    classes, inverse = torch.unique(labels[keep], return_inverse=True)
    x = embeddings[keep]
    sums = torch.zeros(classes.numel(), x.shape[1], dtype=x.dtype).index_add_(0, inverse, x)
    counts = torch.bincount(inverse, minlength=classes.numel()).to(x.dtype)
    return classes, sums / counts[:, None]


def w_inter(weights: Any) -> float:
    """W-Inter: mean angle between distinct class weight vectors of ``weights`` ``[C, D]`` (C ≥ 2)."""
    return _mean_pairwise_angle(_matrix(weights, "weights", min_rows=2))


def class_centers(embeddings: Any, labels: Any) -> Tensor:
    """Mean embedding ``[C', D]`` (float64) of each class present in ``labels`` ``[N]``, ascending id.

    Rows labeled ``-1`` are ignored.
    """
    x = _matrix(embeddings, "embeddings")
    return _centers(x, _labels(labels, x.shape[0]))[1]


def c_inter(centers: Any) -> float:
    """C-Inter: mean angle between distinct class centers ``[C, D]`` (C ≥ 2)."""
    return _mean_pairwise_angle(_matrix(centers, "centers", min_rows=2))


def wc_intra(centers: Any, weights: Any) -> float:
    """WC-Intra: mean over ``j`` of ∠(c_j, W_j) for matching rows of ``[C, D]`` and ``[C, D]``."""
    c, w = _matrix(centers, "centers"), _matrix(weights, "weights")
    if c.shape != w.shape:
        raise ValueError(f"centers {tuple(c.shape)} and weights {tuple(w.shape)} must have the same shape")
    return _mean_matched_angle(c, w)


def compactness_metrics(embeddings: Any, labels: Any, weights: Any | None = None) -> dict[str, float]:
    """Compactness of ``embeddings`` ``[N, D]`` with ``labels`` ``[N]`` (``-1`` ignored).

    Returns ``{"c_inter": ...}`` and, when class ``weights`` ``[C, D]`` are given (row ``j`` is
    class ``j``), also ``"w_inter"`` and ``"wc_intra"`` (the latter over the classes present).
    A metric that needs two rows is left out when fewer exist (one class present, ``C = 1``);
    with no labeled row at all the C-based metrics are left out.
    """
    x = _matrix(embeddings, "embeddings")
    y = _labels(labels, x.shape[0])
    classes, centers = _centers(x, y)
    out: dict[str, float] = {}
    if classes.numel() >= 2:
        out["c_inter"] = _mean_pairwise_angle(centers)
    if weights is not None:
        w = _matrix(weights, "weights")
        if w.shape[1] != x.shape[1]:
            raise ValueError(f"weights dim {w.shape[1]} differs from embedding dim {x.shape[1]}")
        if classes.numel() and int(classes.max()) >= w.shape[0]:
            raise ValueError(f"label {int(classes.max())} has no row in weights [{w.shape[0]}, D]")
        if w.shape[0] >= 2:
            out["w_inter"] = _mean_pairwise_angle(w)
        if classes.numel():
            out["wc_intra"] = _mean_matched_angle(centers, w[classes])
    return out

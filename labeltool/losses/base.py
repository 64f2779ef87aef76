"""The contract every embedding loss implements.

A loss is a small ``torch.nn.Module``: it receives the embeddings of one training batch and
their labels (``-1`` marks an unlabeled row) and returns a scalar. Losses that own learned
parameters (class weights, centers, a metric network) keep them as their own parameters, so
the trainer optimises and checkpoints them together with the projection head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

ParamKind = Literal["float", "int", "bool", "choice"]


@dataclass(frozen=True)
class HyperParam:
    """One tunable hyperparameter of a loss: its default, valid range and a one-line help."""

    name: str
    default: Any
    kind: ParamKind = "float"
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    help: str = ""

    def validate(self, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's kind, or raise ``ValueError``."""
        if self.kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(f"{self.name}: expected true/false, got {value!r}")
            return bool(value)
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{self.name}: {value!r} is not one of {list(self.choices)}")
            return value
        try:
            num = int(value) if self.kind == "int" else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}: expected a number, got {value!r}") from None
        if self.kind == "int" and isinstance(value, float) and not float(value).is_integer():
            raise ValueError(f"{self.name}: expected a whole number, got {value!r}")
        if self.low is not None and num < self.low:
            raise ValueError(f"{self.name}: {num} is below the minimum {self.low}")
        if self.high is not None and num > self.high:
            raise ValueError(f"{self.name}: {num} is above the maximum {self.high}")
        return num


class EmbeddingLoss(nn.Module):
    """Base class of all losses.

    Subclasses set the class attributes below and implement :meth:`compute`.

    - ``uses_unlabeled``: the loss reads rows labeled ``-1`` (semi-supervised); otherwise the
      base class drops them before :meth:`compute` is called.
    - ``has_classifier``: :meth:`logits` gives class scores (``softmax`` suggestions, export).
    - ``normalize_embeddings``: neighbours in this embedding are compared after L2 normalisation
      (cosine geometry); ``False`` means raw Euclidean distance.
    - ``hyperparams``: the tunable knobs with defaults and ranges (the app renders controls).
    """

    name: ClassVar[str] = ""
    uses_unlabeled: ClassVar[bool] = False
    has_classifier: ClassVar[bool] = False
    normalize_embeddings: ClassVar[bool] = True
    hyperparams: ClassVar[tuple[HyperParam, ...]] = ()

    def __init__(self, num_classes: int, embedding_dim: int, **hyper: Any) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be at least 1, got {num_classes}")
        if embedding_dim < 1:
            raise ValueError(f"{self.name}: embedding_dim must be at least 1, got {embedding_dim}")
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        known = {p.name: p for p in self.hyperparams}
        unknown = sorted(set(hyper) - set(known))
        if unknown:
            raise ValueError(
                f"loss {self.name!r} has no hyperparameter(s) {unknown}; valid: {sorted(known)}"
            )
        self.hparams: dict[str, Any] = {
            name: p.validate(hyper[name]) if name in hyper else p.default for name, p in known.items()
        }

    # ------------------------------------------------------------------ contract
    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Loss of one batch.

        Args:
            embeddings: ``[B, D]`` float, the head's output (not normalised).
            labels: ``[B]`` int64, class index in ``[0, C)`` or ``-1`` for unlabeled rows.
        Returns:
            A scalar tensor. A batch with nothing to learn from gives a zero that still carries a
            gradient path (so callers can always ``backward()``).
        """
        if embeddings.ndim != 2 or labels.ndim != 1 or embeddings.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{self.name}: expected embeddings [B, D] and labels [B], got "
                f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        if not self.uses_unlabeled:
            keep = labels >= 0
            embeddings, labels = embeddings[keep], labels[keep]
            if embeddings.shape[0] == 0:
                return embeddings.sum() * 0.0
        return self.compute(embeddings, labels)

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss itself; see :meth:`forward` for shapes."""
        raise NotImplementedError

    def logits(self, embeddings: Tensor) -> Tensor:
        """Inference-time class scores ``[B, C]`` (no margin); only when ``has_classifier``."""
        raise NotImplementedError(f"loss {self.name!r} has no classifier")

    def class_weights(self) -> Tensor | None:
        """The classifier's class vectors ``[C, D]`` (compactness metrics), or ``None``."""
        return None

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this loss: name, sizes and hyperparameters."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "hyper": dict(self.hparams),
        }


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Row-wise L2 normalisation of ``[B, D]`` (zero rows stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def pairwise_distances(x: Tensor, squared: bool = False, eps: float = 1e-12) -> Tensor:
    """Euclidean distances ``[B, B]`` between the rows of ``x`` ``[B, D]``.

    The diagonal is exactly zero; the non-squared form takes the square root of a clamped value
    so its gradient stays finite at zero distance.
    """
    sq = x.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0.0)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    d2 = d2.masked_fill(eye, 0.0)
    if squared:
        return d2
    d = torch.sqrt(d2.clamp_min(eps))
    return d.masked_fill(eye, 0.0)

"""The contract every embedding loss implements, and the work all losses share.

A loss is a small ``torch.nn.Module``: it receives the embeddings of one training batch, their
labels (``-1`` marks an unlabeled row) and optional per-sample weights, and returns a scalar.
A subclass only computes its terms (:meth:`EmbeddingLoss.compute` → :class:`LossTerm` list:
per-sample, per-pair or per-triplet values, or batch-level scalars); the base class validates
the batch, drops unlabeled rows for supervised losses, applies the sample weights and averages
(:func:`reduce_terms`), and owns the classifier parameters of the losses that have one.
Learned parameters (class weights, centers, a metric network) are the loss's own, so the trainer
optimises and checkpoints them together with the projection head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ParamKind = Literal["float", "int", "bool", "choice"]
TermKind = Literal["sample", "anchor", "pair", "triplet", "batch"]
ClassifierKind = Literal["none", "linear", "weights"]
CombineMode = Literal["chain", "stack"]
TERM_KINDS: tuple[TermKind, ...] = ("sample", "anchor", "pair", "triplet", "batch")
ROW_LOCAL_KINDS = frozenset({"sample", "pair", "triplet"})  # a term depends only on its own rows


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
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{self.name}: expected a number, got {value!r}") from None
        if not math.isfinite(num):
            raise ValueError(f"{self.name}: must be a finite number, got {value!r}")
        if self.kind == "int" and isinstance(value, float) and not float(value).is_integer():
            raise ValueError(f"{self.name}: expected a whole number, got {value!r}")
        if self.low is not None and num < self.low:
            raise ValueError(f"{self.name}: {num} is below the minimum {self.low}")
        if self.high is not None and num > self.high:
            raise ValueError(f"{self.name}: {num} is above the maximum {self.high}")
        return num


@dataclass(frozen=True)
class LossTerm:
    """One additive part of a loss: ``scale · mean(values)``, the mean weighted by sample weights.

    - ``name``: a key of the loss's ``term_kinds``, whose kind says how the weights apply.
    - ``values``: ``[n]``, one value per element (a row, a pair or a triplet of rows); a scalar
      for a ``batch`` term.
    - ``rows``: the batch rows behind the elements: a bool mask ``[B]`` or indices ``[n]`` (one
      row each), indices ``[n, 2]`` (pairs) or ``[n, 3]`` (triplets); ``None``: element ``i`` is
      row ``i`` (or, for a ``batch`` term, no rows).
    - ``scale``: the term's coefficient (a hyperparameter such as ``λ``).
    - ``nll_order``: the mean is summed in the order of torch's NLL loss, so a cross-entropy term
      of per-sample values has exactly the value of ``F.cross_entropy(..., reduction="mean")``.
    """

    name: str
    values: Tensor
    rows: Tensor | None = None
    scale: float = 1.0
    nll_order: bool = False


def _sum(values: Tensor, nll_order: bool) -> Tensor:
    """Sum of ``values`` ``[n]``; with ``nll_order`` in torch's NLL-loss summation order."""
    if not nll_order:
        return values.sum()
    zeros = torch.zeros(values.shape[0], dtype=torch.int64, device=values.device)
    return F.nll_loss(-values[:, None], zeros, reduction="sum")


def _mean(values: Tensor, nll_order: bool) -> Tensor:
    """Unweighted mean of ``values`` ``[n]`` (bit-identical to the loss's own mean reduction)."""
    if not nll_order:
        return values.mean()
    zeros = torch.zeros(values.shape[0], dtype=torch.int64, device=values.device)
    return F.nll_loss(-values[:, None], zeros)


def element_weights(term: LossTerm, weights: Tensor) -> Tensor:
    """Weight ``[n]`` of each element of ``term`` from sample ``weights`` ``[B]``: the row's
    weight, or the product of its rows' weights for pairs and triplets."""
    if term.rows is None:
        return weights
    picked = weights[term.rows]
    return picked.prod(dim=1) if picked.ndim == 2 else picked


def term_mean(term: LossTerm, kind: TermKind, weights: Tensor | None) -> Tensor:
    """``mean(values)`` of one term (without its scale).

    Unweighted: the plain mean. Weighted: ``Σ w_e v_e / Σ w_e`` over the elements ``e`` with
    weights from :func:`element_weights` (``0`` when all weights are ``0``). A ``batch`` term is
    a scalar already and takes no weights.
    """
    if kind == "batch":
        return term.values
    if weights is None:
        return _mean(term.values, term.nll_order)
    w = element_weights(term, weights).to(term.values.dtype)
    return _sum(w * term.values, term.nll_order) / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


def reduce_terms(
    terms: Sequence[LossTerm], kinds: Mapping[str, TermKind], weights: Tensor | None, embeddings: Tensor,
    combine: CombineMode = "chain",
) -> Tensor:
    """The loss: ``Σ_t scale_t · mean_t`` over ``terms`` (scalar).

    ``kinds`` maps each term name to its kind. Without terms the value is a zero on the graph of
    ``embeddings`` ``[B, D]``. ``combine="chain"`` adds the parts left to right; ``"stack"`` sums
    ``[zero, *parts]`` in one ``torch.stack(...).sum()`` (the two round differently).
    """
    parts = []
    for term in terms:
        if term.name not in kinds:
            raise KeyError(f"loss term {term.name!r} is not declared in term_kinds {sorted(kinds)}")
        part = term_mean(term, kinds[term.name], weights)
        parts.append(part if term.scale == 1.0 else term.scale * part)
    if combine == "stack" or not parts:
        zero = embeddings.float().sum() * 0.0
        return torch.stack([zero, *parts]).sum() if combine == "stack" else zero
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


class EmbeddingLoss(nn.Module):
    """Base class of all losses.

    Subclasses set the class attributes below and implement :meth:`compute`.

    - ``uses_unlabeled``: the loss reads rows labeled ``-1`` (semi-supervised); otherwise the
      base class drops them (and their weights) before :meth:`compute` is called.
    - ``classifier_kind``: class parameters the base creates, in this order, before the
      subclass's own: ``"linear"`` → ``self.classifier = Linear(D, C)`` (torch's default init);
      ``"weights"`` → ``self.weight`` ``[C, D]``, no bias, Xavier-uniform; ``"none"``.
    - ``has_classifier``: :meth:`logits` gives class scores (``softmax`` suggestions, export);
      set for every ``classifier_kind`` other than ``"none"``.
    - ``normalize_embeddings``: neighbours in this embedding are compared after L2 normalisation
      (cosine geometry); ``False`` means raw Euclidean distance.
    - ``hyperparams``: the tunable knobs with defaults and ranges (the app renders controls).
    - ``term_kinds``: each term :meth:`compute` may return, by name, and how it takes sample
      weights: ``sample`` (one value per row, from that row alone; weight ``w_i``), ``anchor``
      (one value per row, computed against other rows of the batch; weight ``w_i``), ``pair``
      (``w_i · w_j``), ``triplet`` (``w_a · w_p · w_n``), ``batch`` (one value for the batch;
      weights do not apply).
    - ``combine``: how the terms are added (:func:`reduce_terms`).
    """

    name: ClassVar[str] = ""
    uses_unlabeled: ClassVar[bool] = False
    classifier_kind: ClassVar[ClassifierKind] = "none"
    has_classifier: ClassVar[bool] = False
    normalize_embeddings: ClassVar[bool] = True
    hyperparams: ClassVar[tuple[HyperParam, ...]] = ()
    term_kinds: ClassVar[Mapping[str, TermKind]] = {}
    combine: ClassVar[CombineMode] = "chain"
    classifier: nn.Linear
    weight: nn.Parameter

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.classifier_kind != "none":
            cls.has_classifier = True
        bad = {n: k for n, k in cls.term_kinds.items() if k not in TERM_KINDS}
        if bad:
            raise TypeError(f"{cls.__name__}: unknown term kinds {bad}; valid: {TERM_KINDS}")

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
        self._init_classifier()

    def _init_classifier(self) -> None:
        """Create the class parameters named by ``classifier_kind`` (state-dict keys
        ``classifier.weight`` / ``classifier.bias`` or ``weight``)."""
        if self.classifier_kind == "linear":
            self.classifier = nn.Linear(self.embedding_dim, self.num_classes)
        elif self.classifier_kind == "weights":
            self.weight = nn.Parameter(torch.empty(self.num_classes, self.embedding_dim))
            nn.init.xavier_uniform_(self.weight)

    # ------------------------------------------------------------------ contract
    def forward(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """Loss of one batch.

        Args:
            embeddings: ``[B, D]`` float, the head's output (not normalised).
            labels: ``[B]`` int64, class index in ``[0, C)`` or ``-1`` for unlabeled rows.
            weights: optional ``[B]`` non-negative sample weights (e.g. a pseudo-label's
                confidence); see ``term_kinds`` for how each term uses them. ``None`` and all
                ones give the same value.
        Returns:
            A scalar tensor. A batch with nothing to learn from gives a zero that still carries a
            gradient path (so callers can always ``backward()``). In training mode with
            gradients enabled, :meth:`update_state` runs after the loss is computed.
        """
        self._check_batch(embeddings, labels, weights)
        if not self.uses_unlabeled:
            keep = labels >= 0
            embeddings, labels = embeddings[keep], labels[keep]
            weights = None if weights is None else weights[keep]
            if embeddings.shape[0] == 0:
                return embeddings.sum() * 0.0
        terms = self.compute(embeddings, labels)
        value = reduce_terms(terms, self.term_kinds, weights, embeddings, self.combine)
        if self.training and torch.is_grad_enabled():
            self.update_state(embeddings, labels, weights)
        return value

    def _check_batch(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None) -> None:
        if embeddings.ndim != 2 or labels.ndim != 1 or embeddings.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{self.name}: expected embeddings [B, D] and labels [B], got "
                f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        if weights is not None and (weights.shape != labels.shape or not weights.is_floating_point()):
            raise ValueError(
                f"{self.name}: expected float sample weights [{labels.shape[0]}], got "
                f"{weights.dtype} {tuple(weights.shape)}"
            )

    def compute(self, embeddings: Tensor, labels: Tensor) -> list[LossTerm]:
        """The loss's terms for ``embeddings`` ``[B, D]`` and ``labels`` ``[B]`` (see :meth:`forward`);
        an empty list when the batch has nothing to learn from."""
        raise NotImplementedError

    def update_state(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None) -> None:
        """Non-gradient state updates after a training forward (center loss's centers); none here."""

    def logits(self, embeddings: Tensor) -> Tensor:
        """Inference-time class scores ``[B, C]`` (no margin); only when ``has_classifier``.

        ``classifier_kind="linear"`` gives ``W x + b``; other classifiers define their own.
        """
        if self.classifier_kind == "linear":
            return self.classifier(embeddings.float())
        raise NotImplementedError(f"loss {self.name!r} has no classifier")

    def class_weights(self) -> Tensor | None:
        """The classifier's class vectors ``[C, D]`` (detached; compactness metrics), or ``None``."""
        if self.classifier_kind == "linear":
            return self.classifier.weight.detach()
        if self.classifier_kind == "weights":
            return self.weight.detach()
        return None

    def normalized_class_weights(self) -> Tensor:
        """``Ŵ`` ``[C, D]``: the class weights L2-normalised, in float32 (with gradient)."""
        weight = self.classifier.weight if self.classifier_kind == "linear" else self.weight
        return l2_normalize(weight.float())

    def cosine(self, embeddings: Tensor) -> Tensor:
        """``cos θ = x̂ · Ŵ_j`` ``[B, C]`` between normalised embeddings ``[B, D]`` and class weights."""
        return l2_normalize(embeddings.float()) @ self.normalized_class_weights().T

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this loss: name, sizes and hyperparameters."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "hyper": dict(self.hparams),
        }


def softmax_ce_terms(
    logits: Tensor, labels: Tensor, *, name: str = "ce", rows: Tensor | None = None, scale: float = 1.0,
    label_smoothing: float = 0.0,
) -> list[LossTerm]:
    """Softmax cross-entropy of ``logits`` ``[n, C]`` with ``labels`` ``[n]`` as per-sample terms.

    Unweighted, their sum is exactly ``scale · F.cross_entropy(logits, labels,
    label_smoothing=ε)``: ``-log p_y`` with scale ``1 - ε`` (term ``name``) plus, when ``ε > 0``,
    ``-Σ_c log p_c`` with scale ``ε / C`` (term ``name + "_smoothing"``, declared by the loss).
    """
    if label_smoothing <= 0.0:
        return [LossTerm(name, F.cross_entropy(logits, labels, reduction="none"), rows, scale, nll_order=True)]
    log_p = F.log_softmax(logits, dim=1)
    nll = F.nll_loss(log_p, labels, reduction="none")
    smooth = -log_p.sum(dim=1)
    return [
        LossTerm(name, nll, rows, scale * (1.0 - label_smoothing), nll_order=True),
        LossTerm(f"{name}_smoothing", smooth, rows, scale * (label_smoothing / logits.shape[1])),
    ]


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

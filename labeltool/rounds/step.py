"""The round step: train on the current labels, embed the pool, score it, propose.

:func:`step` is the one pipeline every caller runs (the session, so the app and the CLI, the
headless self-training loop and the benchmarks). It takes arrays, labels, configs and the
previous round's state and returns a :class:`RoundResult`; it never sees a session and does
no I/O of its own. A fine-tune round reads images, which its caller hands in as a
:class:`FinetuneImages` (the files and a way to extract features under a backbone).

Continuation: a head round continues the previous round's head, loss and Adam moments unless
that round fine-tuned the backbone (its features differ). A fine-tune round continues from a
previous head whose input size, loss and class count fit, with the moments only when that
round fine-tuned too; otherwise it first trains a fresh head on the starting backbone's
features, so fine-tuning does not begin from a random head.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.eval.metrics import round_metrics
from labeltool.losses import EmbeddingLoss
from labeltool.models.backbones import Backbone
from labeltool.models.extract import pick_device
from labeltool.models.heads import ProjectionHead, resolve_precision
from labeltool.rounds.proposal import Proposal, propose_round
from labeltool.suggest.propose import Suggestion, propose
from labeltool.train.finetune import finetune
from labeltool.train.head import (
    StepProgress,
    class_probabilities,
    embed_features,
    new_head_and_loss,
    train_head,
)

__all__ = [
    "POOL_PRECISION", "FinetuneImages", "PoolFeatures", "RoundInputs", "RoundResult", "RoundState", "continues",
    "embed_pool", "pool_rows", "require_two_classes", "step", "suggest",
]

# A round's pool pass: bfloat16 products on a CPU with AMX or AVX512-BF16 (suggestions on CIFAR-10 features:
# the same 100-image batch, 99.95% of kNN predictions unchanged), float32 elsewhere.
POOL_PRECISION = "auto"


@dataclass(frozen=True)
class RoundInputs:
    """The pool a round trains on: ``ids`` ``[N]``, ``features`` ``[N, F]`` (frozen backbone
    features; an array, memmap or row view), ``labels`` ``[N]`` (-1 = unlabeled) and the class
    names (``C`` of them). ``anchors`` ``[N]`` bool marks the labels a person verified, on which
    a proposal's precision is checked (default: every label)."""

    ids: np.ndarray
    features: Any
    labels: np.ndarray
    classes: Sequence[str]
    anchors: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.features.ndim != 2 or self.features.shape[0] != n or np.shape(self.labels) != (n,):
            raise ValueError(
                f"ids [N], features [N, F] and labels [N] disagree: {np.shape(self.ids)}, "
                f"{tuple(self.features.shape)}, {np.shape(self.labels)}"
            )


@dataclass(frozen=True)
class RoundState:
    """What a round hands to the next: its head, loss, Adam moments, and whether it fine-tuned
    the backbone (its embeddings then come from that backbone's features)."""

    head: ProjectionHead
    loss: EmbeddingLoss
    optimizer_state: Mapping[str, Tensor] | None = None
    finetuned: bool = False


@dataclass(frozen=True)
class PoolFeatures:
    """Features of the pool under one backbone: ``keep`` ``[M]`` positions into the pool rows that
    could be read, ``features`` ``[M, F]`` for them."""

    keep: np.ndarray
    features: Any


@dataclass(frozen=True)
class FinetuneImages:
    """What a fine-tune round needs beyond arrays.

    ``backbone`` is where fine-tuning starts (the previous round's fine-tuned backbone, the
    pretrained one, or a network at its random initialisation: ``start_from`` says which,
    ``"round-N"``, ``"pretrained"`` or ``"scratch"``); ``paths`` ``[N]``
    the image file of each pool row; ``features(backbone, which)`` the pool's features under a
    backbone, ``which`` = ``"start"`` (the starting backbone, needed only when it is not the
    pretrained one) or ``"tuned"`` (the backbone this round produced).
    """

    backbone: Backbone
    start_from: str
    paths: Sequence[Path]
    features: Callable[[Backbone, str], PoolFeatures]


@dataclass
class RoundResult:
    """One finished round.

    ``ids`` ``[M]``, ``labels`` ``[M]``, ``embeddings`` ``[M, D]``, ``probs`` ``[M, C]`` (None for a
    loss without a classifier) cover the pool rows the round embedded (all ``N`` in head mode;
    fine-tune mode leaves out images that no longer decode). ``metrics`` are the round's quality
    figures, ``facts`` how it ran (steps, seconds, device), ``suggestions`` the proposals when a
    :class:`~labeltool.config.SuggestConfig` was given.
    """

    state: RoundState
    ids: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray
    probs: np.ndarray | None
    metrics: dict[str, Any]
    facts: dict[str, Any]
    continued: bool
    backbone: Backbone | None = None  # the fine-tuned backbone (fine-tune mode)
    suggestions: list[Suggestion] = field(default_factory=list)
    proposal: Proposal | None = None  # the suggestions with their estimated precision and coverage


def require_two_classes(labels: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``labels`` ``[N]`` hold at least two classes (-1 = unlabeled)."""
    n_classes = len(np.unique(labels[labels >= 0]))
    if n_classes < 2:
        raise ValueError(
            f"training needs labeled images of at least 2 classes, found {n_classes}; "
            "put a few images into one sub-folder per class (the seed) or label some by hand"
        )


def continues(config: TrainConfig, previous: RoundState | None, in_dim: int, num_classes: int) -> bool:
    """Whether a round with ``config`` continues ``previous`` (see the module docstring)."""
    if previous is None:
        return False
    if config.mode != "finetune":
        return not previous.finetuned
    return (previous.head.in_dim == in_dim and previous.loss.name == config.loss
            and previous.loss.num_classes == num_classes)


def embed_pool(state: RoundState, features: Any, device: str = "auto",
               precision: str = POOL_PRECISION) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings ``[N, D]`` of ``features`` ``[N, F]`` under a round's head, and the class
    probabilities ``[N, C]`` of its loss (None without a classifier). ``precision`` as in
    :func:`~labeltool.train.head.embed_features`; every pass that makes a round's embedding
    (the step, a reopened project) goes through here, so they agree."""
    emb = embed_features(state.head, features, device=device, precision=precision)
    return emb, class_probabilities(state.loss, emb)


def pool_rows(pool_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``[M]`` position in ``pool_ids [N]`` (unique) of each of ``ids [M]`` (all of them in the pool)."""
    if ids is pool_ids or (ids.shape == pool_ids.shape and np.array_equal(ids, pool_ids)):
        return np.arange(ids.size, dtype=np.int64)
    order = np.argsort(pool_ids, kind="stable")
    return order[np.searchsorted(pool_ids, ids, sorter=order)].astype(np.int64)


def suggest(
    result: RoundResult, config: SuggestConfig, rejected: Iterable[tuple[int, int]] = (),
    knn_backend: str = "auto",
) -> list[Suggestion]:
    """Proposals for the unlabeled rows of a round's embedding (see :func:`labeltool.suggest.propose.propose`)."""
    return propose(result.embeddings, result.labels, result.ids, config, rejected=rejected, probs=result.probs,
                   num_classes=result.state.loss.num_classes, knn_backend=knn_backend)


def step(
    inputs: RoundInputs,
    config: TrainConfig,
    previous: RoundState | None = None,
    *,
    images: FinetuneImages | None = None,
    suggest_config: SuggestConfig | None = None,
    rejected: Iterable[tuple[int, int]] = (),
    progress: StepProgress | None = None,
    with_metrics: bool = True,
    knn_backend: str = "auto",
) -> RoundResult:
    """Run one round: train (continuing ``previous`` where it fits), embed, score, propose.

    ``images`` is required for ``config.mode == "finetune"``. ``suggest_config`` adds
    suggestions (``rejected`` pairs ``(image_id, class_id)`` are never proposed);
    the proposal (``result.proposal``) states their precision checked on ``inputs.anchors``
    (:func:`labeltool.rounds.proposal.propose_round`);
    ``with_metrics=False`` skips the round metrics (leave-one-out 1-NN, compactness);
    ``knn_backend`` picks the suggestions' kNN search (:func:`labeltool.suggest.knn.knn_search`).
    """
    t0 = time.perf_counter()
    labels = np.array(inputs.labels, dtype=np.int64)  # a copy: the caller may relabel its array
    require_two_classes(labels)
    if config.mode == "finetune":
        if images is None:
            raise ValueError("a fine-tune round needs the pool's images (FinetuneImages)")
        result = _finetune_round(inputs, labels, config, previous, images, progress)
    else:
        result = _head_round(inputs, labels, config, previous, progress)
    if with_metrics:
        result.metrics = round_metrics(result.embeddings, result.labels, result.state.loss, inputs.classes)
    if suggest_config is not None:
        emb_rows = pool_rows(np.asarray(inputs.ids), np.asarray(result.ids))
        result.proposal = propose_round(
            inputs.features, labels, inputs.ids, result.embeddings, result.probs, emb_rows, len(inputs.classes),
            list(inputs.classes), config, suggest_config, anchors=inputs.anchors, rejected=rejected,
            knn_backend=knn_backend, seed=config.seed)
        result.suggestions = result.proposal.suggestions
    result.facts["round_seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _head_round(inputs: RoundInputs, labels: np.ndarray, config: TrainConfig, previous: RoundState | None,
                progress: StepProgress | None) -> RoundResult:
    """Head mode: a head on the frozen features ``[N, F]``."""
    go_on = continues(config, previous, inputs.features.shape[1], len(inputs.classes))
    init = (previous.head, previous.loss) if go_on and previous is not None else None
    moments = previous.optimizer_state if go_on and previous is not None else None
    res = train_head(inputs.features, labels, len(inputs.classes), config, init=init, optimizer_state=moments,
                     progress=progress)
    state = RoundState(res.head, res.loss, res.optimizer_state, finetuned=False)
    t0 = time.perf_counter()
    emb, probs = embed_pool(state, inputs.features, device=config.device)
    facts = {
        "train_seconds": round(res.seconds, 3), "embed_seconds": round(time.perf_counter() - t0, 3),
        "embed_precision": resolve_precision(POOL_PRECISION, pick_device(config.device)),
        "train_precision": res.precision, "round_seconds": 0.0, "steps": res.steps,
        "final_loss": res.losses[-1] if res.losses else None, "device": res.device, "n_pool": len(inputs.ids),
    }
    return RoundResult(state, inputs.ids, labels, emb, probs, {}, facts, continued=init is not None)


def _finetune_round(inputs: RoundInputs, labels: np.ndarray, config: TrainConfig, previous: RoundState | None,
                    images: FinetuneImages, progress: StepProgress | None) -> RoundResult:
    """Fine-tune mode: backbone, head and loss trained on the images, then the pool re-extracted."""
    ft = config.finetune_config()
    in_dim = images.backbone.spec.feature_dim or int(inputs.features.shape[1])
    go_on = images.start_from != "scratch" and continues(config, previous, in_dim, len(inputs.classes))
    warm_seconds = 0.0
    if go_on and previous is not None:
        head, loss = previous.head, previous.loss
        moments = previous.optimizer_state if previous.finetuned else None
    else:
        head, loss, warm_seconds = _warm_head(inputs, labels, config, images)
        moments = None
    lab = [(images.paths[int(i)], int(labels[i])) for i in np.flatnonzero(labels >= 0)]
    unl = [images.paths[int(i)] for i in np.flatnonzero(labels < 0)]
    res = finetune(images.backbone, head, loss, lab, unl, ft, progress, optimizer_state=moments)
    t1 = time.perf_counter()
    tuned = images.features(res.backbone, "tuned")
    extract_seconds = time.perf_counter() - t1
    state = RoundState(res.head, res.loss, res.optimizer_state, finetuned=True)
    emb, probs = embed_pool(state, tuned.features, device=ft.device)
    facts = {
        "mode": "finetune", "train_seconds": round(warm_seconds + res.seconds, 3),
        "head_warmup_seconds": round(warm_seconds, 3), "finetune_seconds": round(res.seconds, 3),
        "extract_seconds": round(extract_seconds, 3), "round_seconds": 0.0,
        "steps": res.steps, "final_loss": res.losses[-1] if res.losses else None,
        "device": res.device, "amp": res.amp, "images_per_second": round(res.images_per_second, 2),
        "peak_gpu_memory_mb": None if res.peak_memory_mb is None else round(res.peak_memory_mb, 1),
        "trainable_params": res.trainable_params, "stages": (res.config or ft).stages, "backbone_from": images.start_from,
        "n_pool": len(tuned.keep),
    }
    return RoundResult(state, inputs.ids[tuned.keep], labels[tuned.keep], emb, probs, {}, facts,
                       continued=go_on, backbone=res.backbone)


def _warm_head(inputs: RoundInputs, labels: np.ndarray, config: TrainConfig,
               images: FinetuneImages) -> tuple[ProjectionHead, EmbeddingLoss, float]:
    """A fresh head trained on the starting backbone's features (the frozen ones, or those of
    the previous round's fine-tuned backbone); an untrained one for a network trained from
    scratch (its starting features are those of random weights)."""
    if images.start_from == "scratch":
        head, loss = new_head_and_loss(images.backbone.spec.feature_dim, len(inputs.classes), config)
        return head, loss, 0.0
    if images.start_from == "pretrained":
        features, y = inputs.features, labels
    else:
        start = images.features(images.backbone, "start")
        features, y = start.features, labels[start.keep]
    warm = train_head(features, y, len(inputs.classes), config)
    return warm.head, warm.loss, warm.seconds

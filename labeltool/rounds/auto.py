"""Scoring the candidates of mode ``auto`` (:mod:`labeltool.rounds.choose`) by training each one.

Every candidate trains on the same labeled rows (the rest of the labeled set held out and
treated as unlabeled) and is scored by 1-NN of the held-out images among the training ones in
its embedding; a small labeled set is cross-validated (every labeled image held out once, the
candidate trained once per fold, the accuracies pooled). A network trained end to end runs a
short budget (``AUTO_STEPS`` steps, the round's other fine-tune settings) and embeds only the
labeled images again. Half the budget (100 steps of 50 unlabeled images) took less than half
the time but narrowed the from-scratch network's lead on MNIST with 100 labels to the edge of
the noise margin (8 points on 100 held-out labels, against 13 with 200 steps), and that lead
is the one the choice exists to see (benchmarks/README.md section 5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from labeltool.config import TrainConfig
from labeltool.models.backbones import Backbone, create_backbone
from labeltool.models.extract import iter_features, pick_device
from labeltool.rounds.choose import (
    CV_BELOW,
    FOLDS,
    HOLDOUT,
    Candidate,
    Choice,
    decide,
    holdout_folds,
    out_of_reach,
    score_embeddings,
    stratified_holdout,
)
from labeltool.train.finetune import finetune
from labeltool.train.head import embed_features, new_head_and_loss, train_head

__all__ = ["AUTO_STEPS", "choose_training", "holdouts", "score_finetune", "score_head", "with_recipe"]

AUTO_STEPS = 200  # fine-tune steps a candidate gets to show what it can do (fewer if the config asks)


def score_head(features: Any, labels: np.ndarray, held: np.ndarray, config: TrainConfig) -> float:
    """Held-out accuracy of a head trained on frozen ``features`` ``[N, F]``; ``labels`` ``[N]``
    (-1 = unlabeled), ``held`` ``[N]`` marks the labeled rows held out."""
    train_labels = np.where(held, -1, labels)
    res = train_head(features, train_labels, int(labels.max()) + 1, replace(config, mode="head", backbone=None))
    rows = np.flatnonzero(labels >= 0)
    emb = embed_features(res.head, np.asarray(features[rows], dtype=np.float32), device=config.device)
    is_held = held[rows]
    return score_embeddings(emb[~is_held], labels[rows][~is_held], emb[is_held], labels[rows][is_held],
                            res.loss.normalize_embeddings)


def score_finetune(backbone: Backbone, features: Any | None, paths: Sequence[Path], labels: np.ndarray,
                   held: np.ndarray, config: TrainConfig, num_classes: int) -> float:
    """Held-out accuracy of ``backbone`` trained end to end for ``AUTO_STEPS`` steps on the
    non-held labeled images of ``paths`` ``[N]``. ``features`` ``[N, F]`` (the backbone's frozen
    ones) warm-start the head of a pretrained backbone; a from-scratch one starts untrained."""
    train_rows = np.flatnonzero((labels >= 0) & ~held)
    if backbone.spec.pretrained and features is not None:
        warm = train_head(features, np.where(held, -1, labels), num_classes, replace(config, mode="head", backbone=None))
        head, loss = warm.head, warm.loss
    else:
        head, loss = new_head_and_loss(backbone.spec.feature_dim, num_classes, config)
    ft = config.finetune_config()
    ft = replace(ft, steps=min(ft.steps, AUTO_STEPS) if ft.steps else AUTO_STEPS)
    unl = [paths[int(i)] for i in np.flatnonzero(labels < 0)]
    res = finetune(backbone, head, loss, [(paths[int(i)], int(labels[i])) for i in train_rows], unl, ft)
    rows = np.flatnonzero(labels >= 0)
    feats = np.zeros((len(rows), res.backbone.spec.feature_dim or 1), dtype=np.float32)
    ok = np.zeros(len(rows), dtype=bool)
    for idx, f, errors in iter_features(res.backbone, [paths[int(i)] for i in rows], batch_size=256,
                                        device=pick_device(ft.device)):
        if feats.shape[1] != f.shape[1]:
            feats = np.zeros((len(rows), f.shape[1]), dtype=np.float32)
        feats[idx], ok[idx] = f, [not e for e in errors]
    emb = embed_features(res.head, feats, device=config.device)
    is_held = held[rows]
    tr, he = ~is_held & ok, is_held & ok
    return score_embeddings(emb[tr], labels[rows][tr], emb[he], labels[rows][he], res.loss.normalize_embeddings)


def with_recipe(config: TrainConfig, cand: Candidate) -> TrainConfig:
    """``config`` as ``cand`` trains: its mode and network, and its consistency weight where it
    names one and the config's fine-tune settings leave consistency at its default (0)."""
    ft = dict(config.finetune or {})
    if cand.consistency is not None and not ft.get("consistency"):
        ft["consistency"] = cand.consistency
    return replace(config, mode=cand.mode, backbone=cand.backbone, finetune=ft if cand.mode != "head" else config.finetune)


def choose_training(offered: Sequence[Candidate], features: Any, paths: Sequence[Path], labels: np.ndarray,
                    config: TrainConfig, project_backbone: Callable[[], Backbone],
                    progress: Callable[[str], None] | None = None) -> Choice:
    """Score every candidate of ``offered`` on the held-out labeled rows of ``labels`` ``[N]``
    (:func:`holdouts`, fold by fold) and pick (:func:`labeltool.rounds.choose.decide`). A
    costlier candidate stops at the first fold after which it can no longer be picked over the
    fully scored ones (:func:`labeltool.rounds.choose.out_of_reach`); its score is then its
    accuracy on the folds it ran."""
    lab = np.flatnonzero(labels >= 0)
    masks = holdouts(labels, config.seed)
    n_held = sum(int(m.sum()) for m in masks)
    if n_held == 0:
        return Choice(offered[0], {}, int(len(lab)), 0, f"{offered[0].label}: no class has two labeled images yet, "
                      "so none can be held out to compare the ways to learn; the cheapest one until then")
    scores: dict[Candidate, float] = {}
    scored_on: dict[Candidate, int] = {}
    for cand in offered:
        right, seen = 0.0, 0
        best_full = max((scores[c] for c in scores if c not in scored_on), default=None)
        for k, held in enumerate(masks):
            if progress:
                progress(f"scoring {cand.label}" + (f" (fold {k + 1} of {len(masks)})" if len(masks) > 1 else ""))
            right += _fold_accuracy(cand, held, features, paths, labels, config, project_backbone) * int(held.sum())
            seen += int(held.sum())
            if best_full is not None and out_of_reach(best_full, right, seen, n_held):
                scored_on[cand] = seen
                break
        scores[cand] = right / seen
    return decide(scores, offered, int(len(lab)), n_held, scored_on=scored_on)


def _fold_accuracy(cand: Candidate, held: np.ndarray, features: Any, paths: Sequence[Path], labels: np.ndarray,
                   config: TrainConfig, project_backbone: Callable[[], Backbone]) -> float:
    """``cand``'s accuracy on the labeled rows ``held`` ``[N]`` holds out, trained on the rest."""
    if cand.mode == "head":
        return score_head(features, labels, held, config)
    net = create_backbone(cand.backbone) if cand.backbone else project_backbone()
    frozen = None if cand.backbone else features
    return score_finetune(net, frozen, paths, labels, held, with_recipe(config, cand), int(labels.max()) + 1)


def holdouts(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """The hold-out masks ``[N]`` the candidates are scored on: ``FOLDS`` folds that hold out
    every labeled row once when fewer than ``CV_BELOW`` rows are labeled, else one stratified
    ``HOLDOUT`` share."""
    lab = np.flatnonzero(labels >= 0)
    parts = holdout_folds(labels[lab], FOLDS, seed) if len(lab) < CV_BELOW else \
        [stratified_holdout(labels[lab], HOLDOUT, seed)]
    masks = []
    for part in parts:
        held = np.zeros(len(labels), dtype=bool)
        held[lab[part]] = True
        masks.append(held)
    return masks

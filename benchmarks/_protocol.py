"""One run of the Sahito et al. self-training protocol on cached features (pure array loop).

Seed: a balanced labeled set; every other training image is unlabeled. Meta-iteration: embed
every image with the current model, take the 1-NN of each unlabeled image among the labeled ones
(squared L2 in the loss's geometry), select p% of the remaining pool stratified by predicted class
(p·|U|/C per class, most confident first), add them as pseudo-labels (no review), continue
training the same model (never re-initialised). Test accuracy after every meta-iteration.

What "the model" is depends on ``task["mode"]``: ``head`` trains a projection head on frozen
backbone features (:class:`HeadLearner`); ``finetune`` also trains the backbone's last stages on
the images and re-extracts the features after every meta-iteration
(:class:`_protocol_finetune.FinetuneLearner`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _datasets import balanced_seed
from _features import FeatureSet, load_features

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.eval.metrics import knn_accuracy
from labeltool.losses import EmbeddingLoss
from labeltool.rounds.step import RoundInputs, RoundResult, RoundState, step, suggest
from labeltool.train.head import class_probabilities, embed_features

MODES = ("head", "finetune")

# Test accuracy (%) reported by Sahito, Frank & Pfahringer for CIFAR-10 with 4000 labels, VGG16:
# (4000 labels only, after self-learning, all 50000 labels).
PAPER = {
    ("cifar10", "pretrained", "cross_entropy"): (77.07, 83.33, 89.37),
    ("cifar10", "pretrained", "triplet"): (76.42, 78.36, 88.15),
    ("cifar10", "pretrained", "contrastive"): (71.98, 76.58, 85.92),
    ("cifar10", "pretrained", "arcface"): (74.76, 76.55, 87.76),
    ("cifar10", "random", "cross_entropy"): (70.43, 79.15, 87.84),
}


VARIANTS = ("paper", "labeltool", "softmax")


def suggest_config(variant: str, percent: float, normalize: bool) -> SuggestConfig:
    """``paper``: 1-NN distance confidence; ``labeltool``: the default distance-weighted 10-NN vote;
    ``softmax``: the loss's classifier (losses that have one). Stratified selection in each."""
    if variant == "paper":
        return SuggestConfig(source="knn", confidence="1nn", k=1, batch_size=None, percent=percent,
                             stratified=True, evidence=0, normalize=normalize)
    if variant == "labeltool":
        return SuggestConfig(source="knn", confidence="vote", k=10, batch_size=None, percent=percent,
                             stratified=True, evidence=0, normalize=True)
    if variant == "softmax":
        return SuggestConfig(source="softmax", batch_size=None, percent=percent, stratified=True, evidence=0)
    raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")


@dataclass
class Fit:
    """What one training call left: the round (its state, and the embedding ``[N, D]`` and class
    probabilities of the train images) and the embedding of the test images ``[M, D]``, with
    timing facts for the record."""

    result: RoundResult
    emb_test: np.ndarray
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def loss(self) -> EmbeddingLoss:
        return self.result.state.loss

    @property
    def emb_train(self) -> np.ndarray:
        return self.result.embeddings

    @property
    def steps(self) -> int:
        return int(self.result.facts["steps"])

    @property
    def device(self) -> str:
        return str(self.result.facts["device"])


class Learner(Protocol):
    """The model of one protocol run: trained on the current labels, continuing where it stopped."""

    def fit(self, labels: np.ndarray, seed: int) -> Fit:
        """Train on ``labels`` ``[N]`` (-1 = unlabeled), continuing from the last call's model."""

    def fit_all(self, labels: np.ndarray, steps: int, seed: int) -> Fit:
        """A fresh model trained on every label ``[N]`` (the all-labels reference)."""

    def config(self) -> dict[str, Any]:
        """The settings, as stored with the result."""


class HeadLearner:
    """Head mode: a projection head on the frozen features ``fs``, never re-initialised."""

    def __init__(self, fs: FeatureSet, cfg: TrainConfig) -> None:
        self.fs, self.cfg = fs, cfg
        self.ids = np.arange(len(fs.train), dtype=np.int64)
        self.state: RoundState | None = None  # the last meta-iteration's head, loss and Adam moments

    def _fit(self, labels: np.ndarray, cfg: TrainConfig, prev: RoundState | None) -> Fit:
        t = time.perf_counter()
        res = step(RoundInputs(self.ids, self.fs.train, labels, self.fs.classes), cfg, prev, with_metrics=False)
        emb_test = embed_features(res.state.head, self.fs.test, device=cfg.device)
        facts = {"train_s": round(res.facts["train_seconds"], 2), "fit_s": round(time.perf_counter() - t, 2)}
        return Fit(res, emb_test, facts)

    def fit(self, labels: np.ndarray, seed: int) -> Fit:
        fit = self._fit(labels, replace(self.cfg, seed=seed), self.state)
        self.state = fit.result.state
        return fit

    def fit_all(self, labels: np.ndarray, steps: int, seed: int) -> Fit:
        return self._fit(labels, replace(self.cfg, seed=seed, max_steps=steps, min_steps=1), None)

    def config(self) -> dict[str, Any]:
        return {"mode": "head", "train": self.cfg.to_json()}


def evaluate(fit: Fit, labels: np.ndarray, y_test: np.ndarray) -> dict[str, float | None]:
    """Test accuracy: 1-NN to the labeled training images, and the loss's classifier if it has one."""
    lab = labels >= 0
    out: dict[str, float | None] = {
        "acc_1nn": knn_accuracy(fit.emb_train[lab], labels[lab], fit.emb_test, y_test,
                                normalize=fit.loss.normalize_embeddings),
        "acc_clf": None,
    }
    probs = class_probabilities(fit.loss, fit.emb_test)
    if probs is not None:
        out["acc_clf"] = float((probs.argmax(1) == y_test).mean())
    return out


def _checkpoint(task: dict[str, Any], record: dict[str, Any]) -> None:
    """Leave the record so far in ``task["partial_dir"]`` (read back if the run is cut short)."""
    if task.get("partial_dir"):
        path = Path(task["partial_dir"]) / f"{task['id']}.json"
        path.with_suffix(".tmp").write_text(json.dumps(record))
        path.with_suffix(".tmp").replace(path)


def make_learner(task: dict[str, Any], fs: FeatureSet) -> Learner:
    """The learner ``task["mode"]`` names (``head`` when absent)."""
    cfg = TrainConfig(loss=task["loss"], seed=int(task["seed"]), device=task["device"], **task.get("train", {}))
    mode = task.get("mode", "head")
    if mode == "head":
        return HeadLearner(fs, cfg)
    if mode == "finetune":
        from _protocol_finetune import FinetuneLearner

        return FinetuneLearner(task, fs, cfg)
    raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")


def run_protocol(task: dict[str, Any]) -> dict[str, Any]:
    """Run one (dataset, init, loss, seed, variant, mode) and return its per-iteration record."""
    t_start = time.perf_counter()
    fs = load_features(task["dataset"], task["init"], task["image_size"], Path(task["cache_dir"]),
                       subset=task.get("subset"), device=task["device"])
    y = fs.y_train
    c = len(fs.classes)
    seed = int(task["seed"])
    per_class = max(1, min(task["labels"] // c, int(np.bincount(y).min()) // 2))  # keeps a pool on subsets
    seed_idx = balanced_seed(y, per_class, seed)
    labels = np.full(len(y), -1, dtype=np.int64)
    labels[seed_idx] = y[seed_idx]
    pseudo = np.zeros(len(y), dtype=bool)
    learner = make_learner(task, fs)
    iters: list[dict[str, Any]] = []

    t = time.perf_counter()
    fit = learner.fit(labels, seed)
    row: dict[str, Any] = {"iteration": 0, "labeled": int((labels >= 0).sum()), "selected": 0,
                           "batch_precision": None, "pseudo_precision": None, **fit.facts, "steps": fit.steps}
    row.update(evaluate(fit, labels, fs.y_test))
    row["seconds"] = round(time.perf_counter() - t, 2)
    iters.append(row)
    scfg = suggest_config(task.get("variant", "paper"), float(task["percent"]), fit.loss.normalize_embeddings)
    for it in range(1, int(task["iterations"]) + 1):
        t = time.perf_counter()
        rows = suggest(fit.result, scfg, knn_backend=task.get("knn_backend", "auto"))
        if not rows:
            break
        sel = np.array([s.image_id for s in rows], dtype=np.int64)
        cls = np.array([s.class_id for s in rows], dtype=np.int64)
        labels[sel] = cls
        pseudo[sel] = True
        t_prop = time.perf_counter() - t
        fit = learner.fit(labels, seed * 1000 + it)
        row = {"iteration": it, "labeled": int((labels >= 0).sum()), "selected": len(sel),
               "batch_precision": float((y[sel] == cls).mean()),
               "pseudo_precision": float((labels[pseudo] == y[pseudo]).mean()),
               "propose_s": round(t_prop, 2), **fit.facts, "steps": fit.steps}
        row.update(evaluate(fit, labels, fs.y_test))
        row["seconds"] = round(time.perf_counter() - t, 2)
        iters.append(row)
        _checkpoint(task, {"task": task, "status": f"partial: {it} of {task['iterations']} iterations",
                           "seed_labels": len(seed_idx), "iterations": iters, "all_labels": None,
                           "has_classifier": bool(fit.loss.has_classifier),
                           "seconds": round(time.perf_counter() - t_start, 1), "device": fit.device})

    full: dict[str, Any] | None = None
    if int(task.get("all_steps", 0)) > 0:
        t = time.perf_counter()
        ref = learner.fit_all(y, int(task["all_steps"]), seed)
        full = {**evaluate(ref, y, fs.y_test), **ref.facts, "steps": ref.steps,
                "seconds": round(time.perf_counter() - t, 2)}
    return {"task": task, "status": "done", "seed_labels": len(seed_idx), "iterations": iters, "all_labels": full,
            "features": fs.meta, "train_config": learner.config(), "suggest_config": scfg.to_dict(),
            "has_classifier": bool(fit.loss.has_classifier), "seconds": round(time.perf_counter() - t_start, 1),
            "device": fit.device}


def primary(row: dict[str, Any] | None, has_classifier: bool) -> float | None:
    """The accuracy a table shows: the classifier's when the loss has one, else 1-NN."""
    if row is None:
        return None
    return row["acc_clf"] if has_classifier and row.get("acc_clf") is not None else row["acc_1nn"]

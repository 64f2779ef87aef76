"""Simulated-review runs for the human-cost benchmark: one labeling method over one pool.

Each round the method ranks every unlabeled image (predicted class + confidence); the top
``batch`` go to a reviewer who answers from ground truth: a right suggestion is accepted (one
review), a wrong one is corrected (one review that also costs the person picking the class).
Images no method will suggest are labeled by hand at the end (review + pick). Methods:

- ``hand``: random order, every image labeled by hand;
- ``knn_frozen``: labeltool's kNN suggestions on the frozen backbone features (no training);
- ``label_spreading``: scikit-learn ``LabelSpreading`` (10-NN graph) on the frozen features;
- ``labeltool_<source>``: train the head (continuing from the last round), embed, propose with
  ``source`` = knn, walk, knn+walk or softmax (the head's classifier; losses that have one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _datasets import balanced_seed, stratified_subset
from _features import load_features

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.losses import get_loss_class
from labeltool.models.extract import pick_device
from labeltool.rounds.step import RoundInputs, step
from labeltool.suggest.knn import knn_search
from labeltool.suggest.propose import propose

DEFAULT_WALK_T = SuggestConfig().walk_temperature  # the library's default

METHODS = ("hand", "knn_frozen", "label_spreading", "labeltool_knn", "labeltool_walk", "labeltool_knn+walk",
           "labeltool_softmax")
Ranker = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _from_suggestions(rows: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([s.image_id for s in rows], dtype=np.int64), np.array([s.class_id for s in rows], dtype=np.int64),
            np.array([s.confidence for s in rows], dtype=np.float64))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def make_ranker(method: str, x: np.ndarray, c: int, task: dict[str, Any], info: dict[str, Any]) -> Ranker:
    """``rank(labels) -> (pool positions, classes, confidences)`` sorted by confidence, descending."""
    ids = np.arange(len(x), dtype=np.int64)
    backend = task.get("knn_backend", "auto")
    device = task["device"]
    if method == "knn_frozen":
        cfg = SuggestConfig(source="knn", batch_size=None, evidence=0)
        return lambda labels: _from_suggestions(propose(x, labels, ids, cfg, num_classes=c, knn_backend=backend))
    if method == "label_spreading":
        from scipy import sparse
        from sklearn.semi_supervised import LabelSpreading

        xn = _unit(x)
        t = time.perf_counter()
        # sklearn's kernel="knn" rebuilds this 10-NN connectivity graph (self included) on every fit;
        # it does not change between rounds, so it is built once and handed over as a callable kernel.
        _, nn = knn_search(xn, xn, 10, backend=backend)
        graph = sparse.csr_matrix((np.ones(nn.size), nn.ravel(), np.arange(0, nn.size + 1, nn.shape[1])),
                                  shape=(len(x), len(x)))
        info["graph_s"] = round(time.perf_counter() - t, 2)

        def rank_ls(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            model = LabelSpreading(kernel=lambda a, b: graph, alpha=0.2, max_iter=30).fit(xn, labels)
            dist = model.label_distributions_
            pred = model.classes_[dist.argmax(1)]
            conf = dist.max(1)
            unl = np.flatnonzero(labels < 0)
            order = unl[np.lexsort((unl, -conf[unl]))]
            return order, pred[order].astype(np.int64), conf[order]

        return rank_ls
    if method.startswith("labeltool_"):
        source = method.split("_", 1)[1]
        cfg = SuggestConfig(source=source, batch_size=None, evidence=0, calibration_folds=0,
                            walk_temperature=float(task.get("walk_temperature", DEFAULT_WALK_T)))
        tcfg = TrainConfig(loss=task.get("loss", "cross_entropy"), seed=int(task["seed"]), device=device,
                           **task.get("train", {}))
        if source == "softmax" and not get_loss_class(tcfg.loss).has_classifier:
            raise ValueError(f"method {method!r} needs a loss with a classifier; {tcfg.loss!r} has none")
        state: dict[str, Any] = {"init": None, "round": 0}
        classes = [str(i) for i in range(c)]

        def rank_lt(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            from dataclasses import replace

            state["round"] += 1
            res = step(RoundInputs(ids, x, labels, classes), replace(tcfg, seed=tcfg.seed * 1000 + state["round"]),
                       state["init"], suggest_config=cfg, with_metrics=False, knn_backend=backend)
            state["init"] = res.state
            info.setdefault("train_s", []).append(round(res.facts["train_seconds"], 2))
            return _from_suggestions(res.suggestions)

        return rank_lt
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def precision_coverage(correct: np.ndarray, pool: int, points: int = 50) -> list[dict[str, float]]:
    """If every suggestion down to rank k were accepted unseen: coverage k/pool vs precision."""
    if correct.size == 0:
        return []
    ks = np.unique(np.linspace(1, correct.size, num=min(points, correct.size)).round().astype(int))
    prec = np.cumsum(correct) / np.arange(1, correct.size + 1)
    return [{"coverage": round(k / pool, 4), "precision": round(float(prec[k - 1]), 4)} for k in ks]


def run_review(task: dict[str, Any]) -> dict[str, Any]:
    """Label the whole pool with one method under the simulated reviewer; per-round and total costs."""
    t0 = time.perf_counter()
    fs = load_features(task["dataset"], "pretrained", task["image_size"], Path(task["cache_dir"]),
                       subset=task.get("subset"), device=task["device"])
    seed = int(task["seed"])
    pool_idx = stratified_subset(fs.y_train, task["pool"], seed) if task.get("pool") else np.arange(len(fs.y_train))
    x = np.asarray(fs.train[pool_idx])
    y = fs.y_train[pool_idx]
    c = len(fs.classes)
    labels = np.full(len(y), -1, dtype=np.int64)
    seeds = balanced_seed(y, int(task["per_class"]), seed)
    labels[seeds] = y[seeds]
    to_label = int((labels < 0).sum())
    batch = max(1, math.ceil(task["batch_percent"] / 100 * to_label))
    method = task["method"]
    info: dict[str, Any] = {}
    rounds: list[dict[str, Any]] = []
    curve: list[dict[str, float]] = []
    auto_acc = None
    if method == "hand":
        order = np.random.default_rng(seed).permutation(np.flatnonzero(labels < 0))
        for r, s in enumerate(range(0, len(order), batch), start=1):
            take = order[s : s + batch]
            labels[take] = y[take]
            rounds.append({"round": r, "reviewed": len(take), "accepted": 0, "corrected": 0, "hand": len(take),
                           "precision": None, "coverage": round(1 - (labels < 0).sum() / to_label, 4)})
    else:
        rank = make_ranker(method, x, c, task, info)
        for r in range(1, int(task["max_rounds"]) + 1):
            if not (labels < 0).any():
                break
            t = time.perf_counter()
            pos, cls, conf = rank(labels)
            right = y[pos] == cls
            if r == 1:
                curve = precision_coverage(right, to_label)
                auto_acc = float(right.mean()) if right.size else None
            pos, right = pos[:batch], right[:batch]
            if pos.size == 0:
                break
            labels[pos] = y[pos]
            rounds.append({"round": r, "reviewed": int(pos.size), "accepted": int(right.sum()),
                           "corrected": int((~right).sum()), "hand": 0, "precision": round(float(right.mean()), 4),
                           "coverage": round(1 - (labels < 0).sum() / to_label, 4),
                           "seconds": round(time.perf_counter() - t, 2)})
        left = np.flatnonzero(labels < 0)
        if left.size:
            labels[left] = y[left]
            rounds.append({"round": len(rounds) + 1, "reviewed": int(left.size), "accepted": 0, "corrected": 0,
                           "hand": int(left.size), "precision": None, "coverage": 1.0, "note": "left over: by hand"})
    reviewed = sum(r["reviewed"] for r in rounds)
    accepted = sum(r["accepted"] for r in rounds)
    corrected = sum(r["corrected"] for r in rounds)
    hand = sum(r["hand"] for r in rounds)
    suggested = accepted + corrected
    return {
        "task": task, "status": "done", "pool": len(y), "seed_labels": len(seeds), "to_label": to_label,
        "batch": batch, "rounds": rounds, "reviewed": reviewed, "accepted": accepted, "corrected": corrected,
        "hand_labeled": hand, "corrections_per_image": round((corrected + hand) / to_label, 4),
        "reviews_per_image": round(reviewed / to_label, 4),
        "suggestion_precision": round(accepted / suggested, 4) if suggested else None,
        "first_round_auto_accuracy": None if auto_acc is None else round(auto_acc, 4),
        "final_label_accuracy": float((labels == y).mean()), "curve": curve, "info": info,
        "seconds": round(time.perf_counter() - t0, 1), "device": str(pick_device(task["device"])),
    }

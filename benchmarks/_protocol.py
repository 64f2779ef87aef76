"""One run of the Sahito et al. self-training protocol on cached features (pure array loop).

Seed: a balanced labeled set; every other training image is unlabeled. Meta-iteration: embed
every image with the current head, take the 1-NN of each unlabeled image among the labeled ones
(squared L2 in the loss's geometry), select p% of the remaining pool stratified by predicted class
(p·|U|/C per class, most confident first), add them as pseudo-labels (no review), continue
training the same head (never re-initialised). Test accuracy after every meta-iteration.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _datasets import balanced_seed
from _features import load_features

from labeltool.metrics import knn_accuracy
from labeltool.suggest import SuggestConfig, propose
from labeltool.train import TrainConfig, class_probabilities, embed_features, train_head

# Test accuracy (%) reported by Sahito, Frank & Pfahringer for CIFAR-10 with 4000 labels, VGG16:
# (4000 labels only, after self-learning, all 50000 labels).
PAPER = {
    ("cifar10", "pretrained", "cross_entropy"): (77.07, 83.33, 89.37),
    ("cifar10", "pretrained", "triplet"): (76.42, 78.36, 88.15),
    ("cifar10", "pretrained", "contrastive"): (71.98, 76.58, 85.92),
    ("cifar10", "pretrained", "arcface"): (74.76, 76.55, 87.76),
    ("cifar10", "random", "cross_entropy"): (70.43, 79.15, 87.84),
}


def suggest_config(variant: str, percent: float, normalize: bool) -> SuggestConfig:
    """``paper``: 1-NN distance confidence; ``labeltool``: the default distance-weighted 10-NN vote."""
    if variant == "paper":
        return SuggestConfig(source="knn", confidence="1nn", k=1, batch_size=None, percent=percent,
                             stratified=True, evidence=0, normalize=normalize)
    if variant == "labeltool":
        return SuggestConfig(source="knn", confidence="vote", k=10, batch_size=None, percent=percent,
                             stratified=True, evidence=0, normalize=True)
    raise ValueError(f"unknown variant {variant!r}; valid: paper, labeltool")


def evaluate(head: Any, loss: Any, emb_train: np.ndarray, labels: np.ndarray, test: np.ndarray,
             y_test: np.ndarray, device: str) -> dict[str, float | None]:
    """Test accuracy: 1-NN to the labeled training images, and the loss's classifier if it has one."""
    emb_test = embed_features(head, test, device=device)
    lab = labels >= 0
    out: dict[str, float | None] = {
        "acc_1nn": knn_accuracy(emb_train[lab], labels[lab], emb_test, y_test, normalize=loss.normalize_embeddings),
        "acc_clf": None,
    }
    probs = class_probabilities(loss, emb_test)
    if probs is not None:
        out["acc_clf"] = float((probs.argmax(1) == y_test).mean())
    return out


def _checkpoint(task: dict[str, Any], record: dict[str, Any]) -> None:
    """Leave the record so far in ``task["partial_dir"]`` (read back if the run is cut short)."""
    if task.get("partial_dir"):
        path = Path(task["partial_dir"]) / f"{task['id']}.json"
        path.with_suffix(".tmp").write_text(json.dumps(record))
        path.with_suffix(".tmp").replace(path)


def run_protocol(task: dict[str, Any]) -> dict[str, Any]:
    """Run one (dataset, init, loss, seed, variant) and return its per-iteration record."""
    t_start = time.perf_counter()
    fs = load_features(task["dataset"], task["init"], task["image_size"], Path(task["cache_dir"]),
                       subset=task.get("subset"), device=task["device"])
    feats, y = fs.train, fs.y_train
    c = len(fs.classes)
    seed = int(task["seed"])
    device = task["device"]
    per_class = max(1, min(task["labels"] // c, int(np.bincount(y).min()) // 2))  # keeps a pool on subsets
    seed_idx = balanced_seed(y, per_class, seed)
    labels = np.full(len(y), -1, dtype=np.int64)
    labels[seed_idx] = y[seed_idx]
    pseudo = np.zeros(len(y), dtype=bool)
    cfg = TrainConfig(loss=task["loss"], seed=seed, device=device, **task.get("train", {}))
    ids = np.arange(len(y), dtype=np.int64)
    iters: list[dict[str, Any]] = []

    t = time.perf_counter()
    res = train_head(feats, labels, c, cfg)
    head, loss = res.head, res.loss
    emb = embed_features(head, feats, device=device)
    row = {"iteration": 0, "labeled": int((labels >= 0).sum()), "selected": 0, "batch_precision": None,
           "pseudo_precision": None, "train_s": round(res.seconds, 2), "steps": res.steps}
    row.update(evaluate(head, loss, emb, labels, fs.test, fs.y_test, device))
    row["seconds"] = round(time.perf_counter() - t, 2)
    iters.append(row)
    scfg = suggest_config(task.get("variant", "paper"), float(task["percent"]), loss.normalize_embeddings)
    for it in range(1, int(task["iterations"]) + 1):
        t = time.perf_counter()
        rows = propose(emb, labels, ids, scfg, num_classes=c, knn_backend=task.get("knn_backend", "auto"))
        if not rows:
            break
        sel = np.array([s.image_id for s in rows], dtype=np.int64)
        cls = np.array([s.class_id for s in rows], dtype=np.int64)
        labels[sel] = cls
        pseudo[sel] = True
        t_prop = time.perf_counter() - t
        res = train_head(feats, labels, c, replace(cfg, seed=seed * 1000 + it), init=(head, loss))
        head, loss = res.head, res.loss
        emb = embed_features(head, feats, device=device)
        row = {"iteration": it, "labeled": int((labels >= 0).sum()), "selected": len(sel),
               "batch_precision": float((y[sel] == cls).mean()),
               "pseudo_precision": float((labels[pseudo] == y[pseudo]).mean()),
               "propose_s": round(t_prop, 2), "train_s": round(res.seconds, 2), "steps": res.steps}
        row.update(evaluate(head, loss, emb, labels, fs.test, fs.y_test, device))
        row["seconds"] = round(time.perf_counter() - t, 2)
        iters.append(row)
        _checkpoint(task, {"task": task, "status": f"partial: {it} of {task['iterations']} iterations",
                           "seed_labels": len(seed_idx), "iterations": iters, "all_labels": None,
                           "has_classifier": bool(loss.has_classifier), "seconds": round(time.perf_counter() - t_start, 1),
                           "device": res.device})

    full: dict[str, Any] | None = None
    if int(task.get("all_steps", 0)) > 0:
        t = time.perf_counter()
        cfg_all = replace(cfg, max_steps=int(task["all_steps"]), min_steps=1)
        res = train_head(feats, y, c, cfg_all)
        emb_all = embed_features(res.head, feats, device=device)
        full = evaluate(res.head, res.loss, emb_all, y, fs.test, fs.y_test, device)
        full.update({"steps": res.steps, "seconds": round(time.perf_counter() - t, 2)})
    return {"task": task, "status": "done", "seed_labels": len(seed_idx), "iterations": iters, "all_labels": full,
            "features": fs.meta, "train_config": cfg.to_json(), "suggest_config": scfg.to_dict(),
            "has_classifier": bool(loss.has_classifier), "seconds": round(time.perf_counter() - t_start, 1),
            "device": res.device}


def primary(row: dict[str, Any] | None, has_classifier: bool) -> float | None:
    """The accuracy a table shows: the classifier's when the loss has one, else 1-NN."""
    if row is None:
        return None
    return row["acc_clf"] if has_classifier and row.get("acc_clf") is not None else row["acc_1nn"]

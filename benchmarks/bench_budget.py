"""What a shorter training budget and the bfloat16 pool pass cost in quality, on real features.

    python benchmarks/bench_budget.py --threads 1                      # CIFAR-10 and Fashion-MNIST, 64 px
    python benchmarks/bench_budget.py --datasets synthetic --losses cross_entropy --steps 20 40 --seeds 0  # smoke

Budget: a fresh head (labeltool's default ``TrainConfig`` but ``min_steps = max_steps = S``) on
``--labels`` labeled training images (stratified, per seed), for each loss; accuracy on the test
images: the classifier's (losses with one) and 1-NN among the labeled embeddings. Precision: one
head per dataset and seed (default config, the smallest label count), the training pool
embedded by the float32 module and by the bfloat16 folded pass
(:func:`labeltool.models.heads.fold_head`); how many unlabeled images keep their 10-NN vote and
their suggestion (``propose``'s default batch of 100), and the test accuracy of both.
Continued (``--continued``): what a later round pays. A head trained with the default budget
on half of each class's labels, then continued (its head, loss and Adam moments, as a round
continues the previous one) on all ``--labels`` for S steps, against a fresh head on the same
labels. Writes benchmarks/results/budget.json (``--continued``: budget_continued.json).
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import replace
from typing import Any

import numpy as np
from _common import default_cache_dir, environment, set_threads, table, write_json
from _features import load_features

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.eval.metrics import knn_accuracy, unit_rows
from labeltool.suggest.knn import knn_search
from labeltool.suggest.propose import propose
from labeltool.train.head import class_probabilities, embed_features, train_head


def seeded_labels(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``[N]`` labels: ``per_class`` random images of each class keep theirs, the rest -1."""
    labels = np.full(y.size, -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        labels[rng.choice(members, min(per_class, members.size), replace=False)] = c
    return labels


def budget_row(fs: Any, loss: str, n_labels: int, steps: int, seed: int) -> dict[str, Any]:
    """Test accuracy of one head trained ``steps`` steps."""
    labels = seeded_labels(np.asarray(fs.y_train), n_labels // len(fs.classes), seed)
    cfg = TrainConfig(loss=loss, device="cpu", seed=seed, min_steps=steps, max_steps=steps)
    t = time.perf_counter()
    res = train_head(fs.train, labels, len(fs.classes), cfg)
    seconds = time.perf_counter() - t
    return {"dataset": fs.name, "loss": loss, "labels": int((labels >= 0).sum()), "steps": res.steps, "seed": seed,
            **test_accuracies(fs, res, labels), "train_s": round(seconds, 2)}


def test_accuracies(fs: Any, res: Any, labels: np.ndarray) -> dict[str, float | None]:
    """Test accuracy of a trained head: its classifier's (None without one) and 1-NN among the
    embeddings of the rows labeled in ``labels`` ``[N]``."""
    test = embed_features(res.head, fs.test)
    lab = labels >= 0
    probs = class_probabilities(res.loss, test)
    return {"softmax": None if probs is None else float((probs.argmax(1) == fs.y_test).mean()),
            "nn1": knn_accuracy(embed_features(res.head, fs.train[lab]), labels[lab], test, np.asarray(fs.y_test))}


def nested_labels(y: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(first [N], all [N])``: ``all`` as :func:`seeded_labels`, ``first`` half of each class of it."""
    full = seeded_labels(y, per_class, seed)
    first = full.copy()
    rng = np.random.default_rng(seed + 1000)
    for c in np.unique(full[full >= 0]):
        members = np.flatnonzero(full == c)
        first[rng.choice(members, members.size - members.size // 2, replace=False)] = -1
    return first, full


def continued_rows(fs: Any, loss: str, n_labels: int, steps: list[int], seed: int) -> list[dict[str, Any]]:
    """Test accuracy of a head continued from a round on half the labels, for each of ``steps``,
    and of a fresh head with the default budget on the same labels (the first row, ``continued`` False)."""
    first, full = nested_labels(np.asarray(fs.y_train), n_labels // len(fs.classes), seed)
    k = len(fs.classes)
    base = TrainConfig(loss=loss, device="cpu", seed=seed)
    earlier = train_head(fs.train, first, k, base)
    out = []
    for s in [0, *steps]:
        cfg = base if s == 0 else replace(base, min_steps=s, max_steps=s, continued_steps=s)
        init = None if s == 0 else (copy.deepcopy(earlier.head), copy.deepcopy(earlier.loss))
        t = time.perf_counter()
        res = train_head(fs.train, full, k, cfg, init=init, optimizer_state=None if s == 0 else earlier.optimizer_state)
        seconds = time.perf_counter() - t
        out.append({"dataset": fs.name, "loss": loss, "labels": int((full >= 0).sum()), "first_labels": int((first >= 0).sum()),
                    "continued": s > 0, "steps": res.steps, "seed": seed,
                    **test_accuracies(fs, res, full), "train_s": round(seconds, 2)})
    return out


def precision_row(fs: Any, n_labels: int, seed: int) -> dict[str, Any]:
    """float32 against bfloat16 pool passes under one head (module docstring)."""
    labels = seeded_labels(np.asarray(fs.y_train), n_labels // len(fs.classes), seed)
    res = train_head(fs.train, labels, len(fs.classes), TrainConfig(device="cpu", seed=seed))
    ids = np.arange(labels.size)
    out: dict[str, Any] = {"dataset": fs.name, "labels": int((labels >= 0).sum()), "seed": seed}
    votes, batches = {}, {}
    for prec in ("float32", "bfloat16"):
        emb = embed_features(res.head, fs.train, precision=prec)
        lab = labels >= 0
        _, nn = knn_search(unit_rows(emb[~lab]), unit_rows(emb[lab]), 10)
        votes[prec] = np.array([np.bincount(r, minlength=len(fs.classes)).argmax() for r in labels[lab][nn]])
        rows = propose(emb, labels, ids, SuggestConfig(), probs=class_probabilities(res.loss, emb),
                       num_classes=len(fs.classes))
        batches[prec] = {r.image_id for r in rows}
        test = embed_features(res.head, fs.test, precision=prec)
        probs = class_probabilities(res.loss, test)
        out[f"test_{prec}"] = None if probs is None else float((probs.argmax(1) == fs.y_test).mean())
        if prec == "bfloat16":
            ref = embed_features(res.head, fs.train)
            out["relative_difference"] = float(np.linalg.norm(emb - ref) / np.linalg.norm(ref))
    out["same_vote"] = float((votes["float32"] == votes["bfloat16"]).mean())
    out["same_batch"] = len(batches["float32"] & batches["bfloat16"])
    out["batch"] = len(batches["float32"])
    return out


def summary(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Mean accuracy over the seeds per dataset, loss, label count and steps."""
    groups: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["loss"], r["labels"], r["steps"]), []).append(r)
    return [[ds, loss, n, steps, *seed_means(g)] for (ds, loss, n, steps), g in sorted(groups.items())]


def seed_means(g: list[dict[str, Any]]) -> list[Any]:
    """``[seeds, softmax %, 1-NN %, train s]`` of one group of rows, means over its seeds."""
    soft = [r["softmax"] for r in g if r["softmax"] is not None]
    return [len(g), f"{100 * np.mean(soft):.2f}" if soft else "-", f"{100 * np.mean([r['nn1'] for r in g]):.2f}",
            f"{np.mean([r['train_s'] for r in g]):.2f}"]


PRECISION_KEYS = ["dataset", "labels", "seed", "relative_difference", "same_vote", "same_batch", "batch",
                  "test_float32", "test_bfloat16"]


def continued_summary(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Mean accuracy over the seeds per dataset, loss, label count, start (fresh or continued) and steps."""
    groups: dict[tuple[str, str, int, bool, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["loss"], r["labels"], not r["continued"], r["steps"]), []).append(r)
    return [[ds, loss, n, "fresh" if fresh else f"continued from {g[0]['first_labels']}", steps, *seed_means(g)]
            for (ds, loss, n, fresh, steps), g in sorted(groups.items())]


CONTINUED_HEADERS = ["dataset", "loss", "labels", "start", "steps", "seeds", "softmax %", "1-NN %", "train s"]


def budget_tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """``(title, headers, rows)`` of a budget result: accuracy per budget, and the two pool passes."""
    if "continued" in result:
        return [("Test accuracy of a continued round by its steps, against a fresh head (default budget)",
                 CONTINUED_HEADERS, continued_summary(result["continued"]))]
    return [("Test accuracy by training steps (fresh head, mean over the seeds)",
             ["dataset", "loss", "labels", "steps", "seeds", "softmax %", "1-NN %", "train s"], summary(result["budget"])),
            ("float32 against bfloat16 pool pass under one head (default steps)", PRECISION_KEYS,
             [[r[k] for k in PRECISION_KEYS] for r in result["precision"]])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["cifar10", "fashion_mnist"])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--subset", type=int, default=6000, help="stratified training images per dataset")
    ap.add_argument("--losses", nargs="+", default=["cross_entropy", "arcface", "center", "triplet", "association"])
    ap.add_argument("--labels", nargs="+", type=int, default=[100, 4000])
    ap.add_argument("--steps", nargs="+", type=int, default=[100, 150, 300, 375])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--continued", action="store_true", help="a continued round's steps (module docstring)")
    ap.add_argument("--name", default=None, help="result name (default budget, or budget_continued)")
    args = ap.parse_args()
    set_threads(args.threads)
    if args.continued:
        run_continued(args)
        return
    args.name = args.name or "budget"
    result: dict[str, Any] = {**environment("cpu"), "args": {k: str(v) for k, v in vars(args).items()},
                              "budget": [], "precision": []}
    for ds in args.datasets:
        fs = load_features(ds, "pretrained", args.image_size, default_cache_dir(), subset=args.subset)
        for seed in args.seeds:
            result["precision"].append(precision_row(fs, min(args.labels), seed))
            write_json(args.name, result)
        for loss in args.losses:
            for n in args.labels:
                for steps in args.steps:
                    for seed in args.seeds:
                        result["budget"].append(budget_row(fs, loss, n, steps, seed))
                        write_json(args.name, result)
                print(table(["dataset", "loss", "labels", "steps", "seeds", "softmax %", "1-NN %", "train s"],
                            [r for r in summary(result["budget"]) if r[1] == loss and r[0] == fs.name and r[2] == n]),
                      flush=True)
    print(table(PRECISION_KEYS, [[r[k] for k in PRECISION_KEYS] for r in result["precision"]]))
    print(f"wrote {write_json(args.name, result)}")


def run_continued(args: argparse.Namespace) -> None:
    """The ``--continued`` runs, written after each loss."""
    name = args.name or "budget_continued"
    result: dict[str, Any] = {**environment("cpu"), "args": {k: str(v) for k, v in vars(args).items()}, "continued": []}
    for ds in args.datasets:
        fs = load_features(ds, "pretrained", args.image_size, default_cache_dir(), subset=args.subset)
        for loss in args.losses:
            for n in args.labels:
                for seed in args.seeds:
                    result["continued"].extend(continued_rows(fs, loss, n, args.steps, seed))
                write_json(name, result)
                print(table(CONTINUED_HEADERS, [r for r in continued_summary(result["continued"])
                                                if r[0] == fs.name and r[1] == loss and r[2] == n]), flush=True)
    print(f"wrote {write_json(name, result)}")


if __name__ == "__main__":
    main()

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
Writes benchmarks/results/budget.json.
"""

from __future__ import annotations

import argparse
import time
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
    test = embed_features(res.head, fs.test)
    lab = labels >= 0
    probs = class_probabilities(res.loss, test)
    return {"dataset": fs.name, "loss": loss, "labels": int(lab.sum()), "steps": res.steps, "seed": seed,
            "softmax": None if probs is None else float((probs.argmax(1) == fs.y_test).mean()),
            "nn1": knn_accuracy(embed_features(res.head, fs.train[lab]), labels[lab], test, np.asarray(fs.y_test)),
            "train_s": round(seconds, 2)}


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
    out = []
    for (ds, loss, n, steps), g in sorted(groups.items()):
        soft = [r["softmax"] for r in g if r["softmax"] is not None]
        out.append([ds, loss, n, steps, len(g), f"{100 * np.mean(soft):.2f}" if soft else "-",
                    f"{100 * np.mean([r['nn1'] for r in g]):.2f}", f"{np.mean([r['train_s'] for r in g]):.2f}"])
    return out


PRECISION_KEYS = ["dataset", "labels", "seed", "relative_difference", "same_vote", "same_batch", "batch",
                  "test_float32", "test_bfloat16"]


def budget_tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """``(title, headers, rows)`` of a budget result: accuracy per budget, and the two pool passes."""
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
    ap.add_argument("--name", default="budget")
    args = ap.parse_args()
    set_threads(args.threads)
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


if __name__ == "__main__":
    main()

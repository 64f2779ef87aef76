"""How well the kNN vote confidence ranks suggestions, with and without its uniform prior.

    python benchmarks/bench_vote_prior.py --datasets fashion_mnist cifar10 --image-sizes 64 96
    python benchmarks/bench_vote_prior.py --datasets synthetic          # smoke

One round as a user starts it: 10 labels per class, a head trained with the default
``TrainConfig``, the 10 nearest labeled images of every unlabeled one. Each prior scores the same
neighbour lists; suggestions are ranked by confidence (ties by image id, as ``propose`` does) and
the table gives the precision of the top p% of the ranking, the share of the pool tied at the top
score, and the mean confidence against the accuracy. Writes benchmarks/results/vote_prior.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from _common import default_cache_dir, environment, set_threads, table, write_json
from _datasets import balanced_seed
from _features import load_features

from labeltool.config import TrainConfig
from labeltool.suggest.knn import knn_search
from labeltool.suggest.knn_scores import knn_class_scores, vote_temperature
from labeltool.train.head import embed_features, train_head

TOPS = (1, 5, 10, 20, 50)


def ranking_quality(pred: np.ndarray, conf: np.ndarray, truth: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """Precision of the top p% of a ranking by ``conf`` descending (ties by id), and tie share."""
    order = np.lexsort((ids, -conf))
    right = (pred == truth)[order]
    n = len(order)
    out = {f"prec@{p}%": round(float(right[: max(1, n * p // 100)].mean()), 3) for p in TOPS}
    out.update({"tied_at_top": round(float((conf >= conf.max() - 1e-9).mean()), 3),
                "mean_conf": round(float(conf.mean()), 3), "accuracy": round(float(right.mean()), 3)})
    return out


def run(dataset: str, image_size: int, priors: list[float], cache_dir: Path, seed: int, k: int) -> list[dict[str, Any]]:
    fs = load_features(dataset, "pretrained", image_size, cache_dir, seed=seed)
    y, c = fs.y_train, len(fs.classes)
    seed_idx = balanced_seed(y, 10, seed)
    labels = np.full(len(y), -1, dtype=np.int64)
    labels[seed_idx] = y[seed_idx]
    res = train_head(fs.train, labels, c, TrainConfig(device="cpu", seed=seed))
    emb = embed_features(res.head, fs.train)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    unl = np.flatnonzero(labels < 0)
    d, i = knn_search(emb[unl], emb[seed_idx], k)
    tau = vote_temperature(d[:, 0])
    rows = []
    for prior in priors:
        scores, seen = knn_class_scores(d, y[seed_idx][i], c, tau=tau, prior=prior)
        scores = np.where(seen, scores, -1.0)
        rows.append({"dataset": dataset, "image_size": image_size, "prior": prior, "pool": len(unl),
                     **ranking_quality(scores.argmax(1), scores.max(1), y[unl], unl)})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["fashion_mnist", "cifar10"])
    ap.add_argument("--image-sizes", nargs="+", type=int, default=[224], help="one per dataset, or one for all")
    ap.add_argument("--priors", nargs="+", type=float, default=[0.0, 1.0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    ap.add_argument("--name", default="vote_prior")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    sizes = args.image_sizes * len(args.datasets) if len(args.image_sizes) == 1 else args.image_sizes
    if len(sizes) != len(args.datasets):
        ap.error("--image-sizes takes one size, or one per dataset")
    rows = [r for ds, px in zip(args.datasets, sizes, strict=True)
            for r in run(ds, px, args.priors, args.cache_dir, args.seed, args.k)]
    write_json(args.name, {**environment("cpu"), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    keys = ["dataset", "image_size", "prior", "pool", *[f"prec@{p}%" for p in TOPS], "tied_at_top", "mean_conf",
            "accuracy"]
    print(table(keys, [[r[k] for k in keys] for r in rows]))


if __name__ == "__main__":
    main()

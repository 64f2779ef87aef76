"""Which suggestion source ranks a round's suggestions best, per loss.

    python benchmarks/bench_sources.py --datasets cifar10 --image-size 96 --labels 4000
    python benchmarks/bench_sources.py --datasets fashion_mnist --image-size 64 --per-class 10
    python benchmarks/bench_sources.py --datasets synthetic --losses cross_entropy w_softmax   # smoke

One round as the app runs it: a balanced seed, a head trained with the default ``TrainConfig``
(``--max-steps`` caps it), every image embedded, then labeltool's ``propose`` over the whole
unlabeled pool once per source: ``knn`` with the vote and with the 1-NN confidence, ``walk``,
``knn+walk`` (only where both agree) and ``softmax`` where the loss has a classifier. The table
gives, per source, the share of the pool it suggests for ("coverage"), the precision of the top
p% of the pool by confidence (ties by image id; "–" where the source suggests for fewer images)
and the accuracy over everything it suggests. Mean over ``--seeds``. Writes
benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import default_cache_dir, environment, set_threads, table, write_json
from _datasets import balanced_seed
from _features import load_features

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.losses import get_loss_class, list_losses
from labeltool.rounds.step import RoundInputs, step, suggest
from labeltool.suggest.registry import source_info

TOPS = (5, 20, 50)
SOURCES = ("knn vote", "knn 1nn", "walk", "knn+walk", "softmax")


def source_config(source: str) -> SuggestConfig:
    """The ``SuggestConfig`` behind a row label (every image ranked, no evidence)."""
    name, _, confidence = source.partition(" ")
    return SuggestConfig(source=name, confidence=confidence or "vote", batch_size=None, evidence=0)


def ranking_quality(pred: np.ndarray, truth: np.ndarray, pool: int) -> dict[str, Any]:
    """Coverage, precision of the top p% of the pool and overall accuracy of a ranked list.

    ``pred``/``truth``: ``[M]`` predicted and true class of the suggested images, best first.
    """
    right = pred == truth
    out: dict[str, Any] = {"coverage": round(len(pred) / pool, 3)}
    for p in TOPS:
        n = max(1, pool * p // 100)
        out[f"prec@{p}%"] = round(float(right[:n].mean()), 3) if len(right) >= n else None
    out["accuracy"] = round(float(right.mean()), 3) if len(right) else None
    return out


def run(dataset: str, image_size: int | None, loss: str, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One trained round of ``loss`` and every source's ranking of its pool."""
    fs = load_features(dataset, "pretrained", image_size, args.cache_dir, seed=seed)
    y, c = fs.y_train, len(fs.classes)
    per_class = args.labels // c if args.labels else args.per_class
    seed_idx = balanced_seed(y, per_class, seed)
    labels = np.full(len(y), -1, dtype=np.int64)
    labels[seed_idx] = y[seed_idx]
    cfg = TrainConfig(loss=loss, device=args.device, seed=seed,
                      **({"max_steps": args.max_steps} if args.max_steps else {}))
    ids = np.arange(len(y), dtype=np.int64)
    res = step(RoundInputs(ids, fs.train, labels, fs.classes), cfg, with_metrics=False)
    train_s = res.facts["train_seconds"]
    pool = int((labels < 0).sum())
    rows = []
    for source in SOURCES:
        if source_info(source_config(source).source).needs_probs and res.probs is None:
            continue
        t = time.perf_counter()
        found = suggest(res, source_config(source))
        pred = np.array([s.class_id for s in found], dtype=np.int64)
        truth = y[np.array([s.image_id for s in found], dtype=np.int64)]
        rows.append({"dataset": dataset, "labels": len(seed_idx), "loss": loss, "seed": seed, "source": source,
                     "pool": pool, **ranking_quality(pred, truth, pool), "train_s": round(train_s, 1),
                     "propose_s": round(time.perf_counter() - t, 2)})
    return rows


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows averaged over seeds per (dataset, labels, loss, source); a precision missing for any seed stays missing."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["labels"], r["loss"], r["source"]), []).append(r)
    out = []
    for (dataset, labels, loss, source), rs in groups.items():
        row: dict[str, Any] = {"dataset": dataset, "labels": labels, "loss": loss, "source": source, "seeds": len(rs)}
        for key in ("coverage", *(f"prec@{p}%" for p in TOPS), "accuracy", "propose_s"):
            vals = [r[key] for r in rs]
            row[key] = None if any(v is None for v in vals) else round(float(np.mean(vals)), 3)
        out.append(row)
    return out


def pivot(summary: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per (dataset, labels, loss), one column per source: precision of the top 5% / 20%
    of the pool, the best of the row in bold."""
    groups: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in summary:
        groups.setdefault((r["dataset"], r["labels"], r["loss"]), {})[r["source"]] = r
    rows = []
    for (dataset, labels, loss), by_source in groups.items():
        best = max((r["prec@20%"] for r in by_source.values() if r["prec@20%"] is not None), default=None)
        cells = []
        for source in SOURCES:
            r = by_source.get(source)
            if r is None:
                cells.append("–")
                continue
            p5, p20 = (f"{r[k]:.3f}" if r[k] is not None else "–" for k in ("prec@5%", "prec@20%"))
            cells.append(f"{p5} / **{p20}**" if r["prec@20%"] is not None and r["prec@20%"] == best else f"{p5} / {p20}")
        rows.append([dataset, labels, loss, *cells])
    return ["dataset", "labels", "loss", *SOURCES], rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["cifar10"])
    ap.add_argument("--image-size", type=int, default=None, help="input size of the cached features")
    ap.add_argument("--losses", nargs="+", default=["all"], help="names, or 'all'")
    ap.add_argument("--per-class", type=int, default=10, help="seed labels per class")
    ap.add_argument("--labels", type=int, default=None, help="seed labels in total (overrides --per-class)")
    ap.add_argument("--max-steps", type=int, default=None, help="cap on the head's training steps")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    ap.add_argument("--name", default="sources")
    args = ap.parse_args(argv)
    losses = list_losses() if args.losses == ["all"] else args.losses
    for name in losses:
        get_loss_class(name)  # an unknown name fails here, listing the valid ones
    set_threads(args.threads)
    rows = [r for ds in args.datasets for loss in losses for seed in args.seeds
            for r in run(ds, args.image_size, loss, seed, args)]
    summary = mean_rows(rows)
    write_json(args.name, {**environment(args.device), "args": {k: str(v) for k, v in vars(args).items()},
                           "rows": rows, "summary": summary})
    keys = ["dataset", "labels", "loss", "source", "seeds", "coverage", *[f"prec@{p}%" for p in TOPS], "accuracy",
            "propose_s"]
    print(table(keys, [[r[k] for k in keys] for r in summary]))


if __name__ == "__main__":
    main()

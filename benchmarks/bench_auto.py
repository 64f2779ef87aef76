"""What mode ``auto`` picks on a dataset, why, and what deciding costs.

    python benchmarks/bench_auto.py --datasets mnist fashion_mnist cifar10 --pool 5000

Per dataset: a stratified pool of ``--pool`` training images holding ``--per-class`` labels
per class (10 → 100 labels); the candidates ``labeltool.rounds.choose.candidates`` offers for
the images (size and colour measured as the session does) on this machine; each scored by
``labeltool.rounds.auto.choose_training`` on the same hold-out (the frozen features are those of
the bundled backbone at ``--image-size`` px). Prints the choice with its reason and the seconds
each decision took. Writes ``benchmarks/results/auto_choice.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import default_cache_dir, environment, out_dir  # noqa: E402
from _datasets import balanced_seed, stratified_subset  # noqa: E402
from _features import extract, load_images  # noqa: E402
from _protocol_finetune import image_files  # noqa: E402

from labeltool.config import TrainConfig  # noqa: E402
from labeltool.models.backbones import DEFAULT_BACKBONE, create_backbone  # noqa: E402
from labeltool.rounds.auto import choose_training  # noqa: E402
from labeltool.rounds.choose import candidates  # noqa: E402


def decide_on(dataset: str, pool: int, per_class: int, size: int, loss: str, seed: int,
              finetune: dict[str, Any]) -> dict[str, object]:
    """The choice of mode ``auto`` on one dataset's pool, with the time it took."""
    cache = default_cache_dir()
    ds = load_images(dataset, cache)
    rows = np.union1d(stratified_subset(ds.y_train, pool, seed), balanced_seed(ds.y_train, per_class, seed))
    labels = np.full(len(rows), -1, dtype=np.int64)
    seeds = set(balanced_seed(ds.y_train, per_class, seed).tolist())
    for j, r in enumerate(rows):
        if int(r) in seeds:
            labels[j] = int(ds.y_train[r])
    all_paths = image_files(ds.x_train, cache / "images" / dataset / "train")
    paths = [all_paths[int(r)] for r in rows]
    backbone = create_backbone(DEFAULT_BACKBONE, image_size=size)
    t0 = time.perf_counter()
    features = extract(ds.x_train[rows], backbone, torch.device("cpu")).astype(np.float32)
    extract_s = time.perf_counter() - t0
    x = ds.x_train[rows[:64]]
    gray = x.ndim == 3 or bool(np.abs(x.astype(np.int16) - x[..., :1]).max() <= 2)
    offered = candidates(backbone.spec, float(min(ds.x_train.shape[1:3])), gray, cuda=False)
    t1 = time.perf_counter()
    choice = choose_training(offered, features, paths, labels, TrainConfig(loss=loss, seed=seed, mode="auto", finetune=finetune),
                             lambda: backbone, progress=lambda m: print(f"  {dataset}: {m}", flush=True))
    return {"dataset": dataset, "pool": int(len(rows)), "labels": int((labels >= 0).sum()),
            "chosen": choice.candidate.label, "scores": choice.scores, "n_held": choice.n_held,
            "scored_on": choice.scored_on,
            "reason": choice.reason, "decide_seconds": round(time.perf_counter() - t1, 1),
            "frozen_extract_seconds": round(extract_s, 1), "image_size": size, "loss": loss,
            "finetune": finetune}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist", "cifar10"],
                    choices=["mnist", "fashion_mnist", "cifar10", "synthetic_images"])
    ap.add_argument("--finetune-steps", type=int, default=None, help="fewer steps per candidate (smoke runs)")
    ap.add_argument("--finetune", type=json.loads, default={},
                    help='fine-tune settings of the round, as JSON (e.g. \'{"unlabeled_batch": 50}\')')
    ap.add_argument("--pool", type=int, default=5000)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--loss", default="cross_entropy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="auto_choice")
    args = ap.parse_args()
    env = environment("cpu")  # machine, load and time at the start
    path = out_dir() / f"{args.out}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for d in args.datasets:  # written after each dataset: a later one that fails keeps the earlier ones
        r = decide_on(d, args.pool, args.per_class, args.image_size, args.loss, args.seed,
                      {**args.finetune, **({"steps": args.finetune_steps} if args.finetune_steps else {})})
        print(f"{r['dataset']:<14} → {r['chosen']} ({r['decide_seconds']} s): {r['reason']}", flush=True)
        rows.append(r)
        path.write_text(json.dumps({**env, "rows": rows}, indent=2))
    print(f"wrote {path}")

if __name__ == "__main__":
    main()

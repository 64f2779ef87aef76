"""The seed papers' small networks trained from scratch, end to end, against their tables.

    python benchmarks/bench_scratch.py --dataset mnist --net hoffer_mnist \
        --losses distance_ratio_entropy association --steps 1500
    python benchmarks/bench_scratch.py --dataset fashion_mnist --net hoffer_mnist --losses association

Protocol: ``--per-class`` labeled training images per class (10 → the papers' 100 labels),
drawn with a fixed seed; every other training image is unlabeled and available to losses that
use unlabeled data (and to consistency training, ``--consistency``). One end-to-end run of
``labeltool.train.finetune.finetune`` (all stages: the network starts from random weights)
for ``--steps`` steps of P x K labeled images (every class, ``--k`` each) plus
``--unlabeled-batch`` unlabeled ones. Test accuracy on the whole test set: 1-NN to the
labeled images in the embedding (Hoffer & Ailon's rule) and the loss's classifier when it has
one. ``--baseline`` adds the frozen-feature reference: a head on the bundled ImageNet
backbone's features (64 px) of the same labeled images, scored on the same test images.

Writes ``benchmarks/results/scratch_<dataset>.json`` (or ``--out``); ``report.py`` renders it.
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
from _datasets import ImageSet, balanced_seed  # noqa: E402
from _features import extract, load_images  # noqa: E402
from _protocol_finetune import image_files  # noqa: E402

from labeltool.config import FinetuneConfig, TrainConfig  # noqa: E402
from labeltool.eval.metrics import knn_accuracy  # noqa: E402
from labeltool.models.backbones import DEFAULT_BACKBONE, create_backbone  # noqa: E402
from labeltool.train.finetune import finetune  # noqa: E402
from labeltool.train.head import class_probabilities, embed_features, new_head_and_loss, train_head  # noqa: E402

PAPERS = {  # test accuracy (%) the papers report for the same label count
    ("mnist", 100): {"Hoffer & Ailon (Table 1)": 99.22, "Haeusser et al. (association)": 99.11},
    ("cifar10", 4000): {"Hoffer & Ailon (Table 2)": 79.7, "Sahito et al. (self-training, fine-tuned)": 83.33},
}


def run_one(ds: ImageSet, paths: list[Path], seed_rows: np.ndarray, net: str, loss_name: str,
            ft: FinetuneConfig) -> dict[str, Any]:
    """One from-scratch run; its test accuracies, speed and settings."""
    y = ds.y_train
    backbone = create_backbone(net)
    cfg = TrainConfig(loss=loss_name, seed=ft.seed or 0)
    head, loss = new_head_and_loss(backbone.spec.feature_dim, len(ds.classes), cfg)
    unl_rows = np.setdiff1d(np.arange(len(y)), seed_rows)
    labeled = [(paths[int(i)], int(y[i])) for i in seed_rows]
    t0 = time.perf_counter()
    res = finetune(backbone, head, loss, labeled, [paths[int(i)] for i in unl_rows], ft,
                   progress=_progress(loss_name))
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    dev = torch.device("cpu")
    emb_test = embed_features(res.head, extract(ds.x_test, res.backbone, dev), device="cpu")
    extract_s = time.perf_counter() - t1
    emb_lab = embed_features(res.head, extract(ds.x_train[seed_rows], res.backbone, dev), device="cpu")
    probs = class_probabilities(res.loss, emb_test)
    row: dict[str, Any] = {
        "net": net, "loss": loss_name, "labels": int(len(seed_rows)), "steps": res.steps,
        "acc_1nn": knn_accuracy(emb_lab, y[seed_rows], emb_test, ds.y_test, normalize=res.loss.normalize_embeddings),
        "acc_clf": None if probs is None else float((probs.argmax(1) == ds.y_test).mean()),
        "train_seconds": round(train_s, 1), "train_images_per_second": round(res.images_per_second, 1),
        "extract_images_per_second": round(len(ds.x_test) / extract_s, 1),
        "finetune": (res.config or ft).to_json(),  # with the backbone's defaults filled in
    }
    for name in ("holdout_accuracy", "best_step", "stopped_early", "mask_rate"):
        if hasattr(res, name):
            row[name] = getattr(res, name)
    return row


def baseline(ds: ImageSet, seed_rows: np.ndarray, size: int, seed: int) -> dict[str, Any]:
    """A cross-entropy head on frozen ImageNet features of the labeled images; test 1-NN and softmax."""
    backbone = create_backbone(DEFAULT_BACKBONE, image_size=size)
    t0 = time.perf_counter()
    f_lab = extract(ds.x_train[seed_rows], backbone, torch.device("cpu"))
    f_test = extract(ds.x_test, backbone, torch.device("cpu"))
    extract_s = time.perf_counter() - t0
    labels = ds.y_train[seed_rows]
    res = train_head(f_lab, labels, len(ds.classes), TrainConfig(loss="cross_entropy", seed=seed))
    e_lab, e_test = embed_features(res.head, f_lab), embed_features(res.head, f_test)
    probs = class_probabilities(res.loss, e_test)
    return {
        "net": f"{DEFAULT_BACKBONE} frozen ({size} px) + head", "loss": "cross_entropy", "labels": int(len(seed_rows)),
        "acc_1nn": knn_accuracy(e_lab, labels, e_test, ds.y_test),
        "acc_1nn_frozen": knn_accuracy(f_lab.astype(np.float32), labels, f_test.astype(np.float32), ds.y_test),
        "acc_clf": None if probs is None else float((probs.argmax(1) == ds.y_test).mean()),
        "extract_images_per_second": round((len(seed_rows) + len(ds.x_test)) / extract_s, 1),
        "train_seconds": round(res.seconds, 1),
    }


def _progress(name: str) -> Any:
    t0 = time.perf_counter()

    def show(step: int, total: int, value: float) -> None:
        if step % 100 == 1 or step == total:
            print(f"  {name}: step {step}/{total} loss {value:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    return show


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist", "cifar10", "synthetic_images"])
    ap.add_argument("--net", default="hoffer_mnist")
    ap.add_argument("--losses", nargs="*", default=["distance_ratio_entropy", "association"],
                    help="none: only the --baseline")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--k", type=int, default=10, help="labeled images per class in a step")
    ap.add_argument("--unlabeled-batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--finetune", default="{}", help="more FinetuneConfig fields as JSON")
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    env = environment("cpu")  # machine, load and time at the start
    cache = default_cache_dir()
    ds = load_images(args.dataset, cache)
    seed_rows = balanced_seed(ds.y_train, args.per_class, args.seed)
    paths = image_files(ds.x_train, cache / "images" / args.dataset / "train")
    extra = json.loads(args.finetune)
    ft = FinetuneConfig.from_mapping({
        "stages": "all", "steps": args.steps, "classes_per_batch": len(ds.classes), "samples_per_class": args.k,
        "unlabeled_batch": args.unlabeled_batch, "backbone_lr": args.lr, "head_lr": args.lr, "seed": args.seed,
        "device": "cpu", **extra,
    })
    rows = [run_one(ds, paths, seed_rows, args.net, name, ft) for name in args.losses]
    if args.baseline:
        rows.append(baseline(ds, seed_rows, 64, args.seed))
    for r in rows:
        clf = "-" if r["acc_clf"] is None else f"{100 * r['acc_clf']:.2f}"
        print(f"{r['net']:<34} {r['loss']:<24} 1-NN {100 * r['acc_1nn']:.2f}  classifier {clf}  "
              f"{r.get('train_seconds', '-')} s train")
    labels = int(len(seed_rows))
    result = {**env, "dataset": args.dataset, "labels": labels, "papers": PAPERS.get((args.dataset, labels), {}),
              "rows": rows}
    path = out_dir() / f"{args.out or 'scratch_' + args.dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

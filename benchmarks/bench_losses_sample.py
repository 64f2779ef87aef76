"""Every loss on the bundled sample: kNN accuracy on the unlabeled pool after one round and
after three self-training rounds, and seconds per round (head mode).

    python benchmarks/bench_losses_sample.py [--image-size 224] [--rounds 3] [--percent 10]

The pool's ground truth (sample_data/unlabeled_labels.csv) is used only to score: the
self-training rounds accept suggestions unreviewed (``--reviewer none``, the papers' protocol).
Accuracy = share of the pool labeled right if labeling stopped there: an image's label where it
has one, else the class of its nearest labeled image (1-NN) in the learned embedding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labeltool.config import ProjectConfig, SuggestConfig, TrainConfig  # noqa: E402
from labeltool.eval.metrics import knn_accuracy  # noqa: E402
from labeltool.losses import list_losses  # noqa: E402
from labeltool.rounds.selftrain import oracle_ids, read_oracle, run_selftrain  # noqa: E402
from labeltool.session import LabelingSession  # noqa: E402


def pool_accuracy(s: LabelingSession, truth: dict[int, int]) -> float:
    """Share of the oracle's images whose label is right if labeling stopped now: an image's
    current label if it has one, else the class of its nearest labeled image (1-NN)."""
    cur = s.current_round()
    labels = s.label_state().labels
    pos = {int(i): p for p, i in enumerate(cur.ids)}
    ref = [i for i in sorted(labels) if i in pos]
    todo = [i for i in sorted(truth) if i in pos and i not in labels]
    done = [i for i in sorted(truth) if i in labels]
    right = sum(labels[i] == truth[i] for i in done)
    if todo:
        acc = knn_accuracy(cur.embeddings[[pos[i] for i in ref]], np.array([labels[i] for i in ref]),
                           cur.embeddings[[pos[i] for i in todo]], np.array([truth[i] for i in todo]),
                           normalize=cur.checkpoint.loss.normalize_embeddings)
        right += acc * len(todo)
    return float(right / (len(todo) + len(done)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--percent", type=float, default=10.0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--losses", nargs="*", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    oracle = read_oracle(REPO / "sample_data" / "unlabeled_labels.csv")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        shutil.copytree(REPO / "sample_data", base, ignore=shutil.ignore_patterns(".labeltool"))
        t = time.perf_counter()
        with LabelingSession.open(base, config=ProjectConfig(image_size=args.image_size)) as s:
            res = s.embed(device=args.device)
        embed_s = time.perf_counter() - t
        print(f"embedded {res.computed} images at {args.image_size} px on {res.device} in {embed_s:.1f} s "
              f"({res.computed / embed_s:.1f} img/s incl. scan)")
        for loss in args.losses or list_losses():
            work = Path(tmp) / loss
            shutil.copytree(base, work)
            cfg = TrainConfig(loss=loss, epochs=args.epochs, seed=args.seed, device=args.device)
            sug = SuggestConfig(percent=args.percent, batch_size=None, stratified=True, confidence="1nn",
                                source="knn")
            with LabelingSession.open(work) as s:
                truth = oracle_ids(s, oracle)
                t = time.perf_counter()
                m1 = s.train_round(cfg)
                r1_s = time.perf_counter() - t
                acc1 = pool_accuracy(s, truth)
                reports = run_selftrain(s, args.rounds, cfg, sug, oracle=oracle, reviewer="none")
                acc3 = pool_accuracy(s, truth)
                st = s.label_state()
                pseudo = [i for i in st.labels if st.source[i] == "pseudo"]
                pseudo_acc = float(np.mean([st.labels[i] == truth[i] for i in pseudo])) if pseudo else None
            row = {"loss": loss, "acc_round1": round(acc1, 4), f"acc_after_{args.rounds}_selftrain": round(acc3, 4),
                   "pseudo_label_precision": None if pseudo_acc is None else round(pseudo_acc, 4),
                   "pseudo_labels": len(pseudo), "sec_round1": round(r1_s, 2),
                   "sec_per_round": round(float(np.mean([r.round_seconds for r in reports])), 2),
                   "device": m1["device"]}
            rows.append(row)
            print(json.dumps(row))
    hdr = f"{'loss':24s} {'kNN acc r1':>10s} {'after ' + str(args.rounds):>9s} {'pseudo prec':>11s} {'s/round':>8s}"
    print(hdr)
    for r in rows:
        pp = "-" if r["pseudo_label_precision"] is None else f"{r['pseudo_label_precision']:.3f}"
        print(f"{r['loss']:24s} {r['acc_round1']:10.3f} {r[f'acc_after_{args.rounds}_selftrain']:9.3f} "
              f"{pp:>11s} {r['sec_per_round']:8.2f}")
    out = Path(os.environ.get("BENCH_OUT", REPO / "benchmarks" / "results")) / f"losses_sample_{args.image_size}px.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join(sys.argv), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "device": rows[0]["device"] if rows else None, "seed": args.seed,
        "embed_seconds": round(embed_s, 2), "rows": rows,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

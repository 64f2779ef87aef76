"""Is the stated precision of a batch true? Every round, for two reviewers, on three datasets.

Each round trains the head (continuing), proposes a batch with the default selection (prevalence
quotas) and states its precision with a 90% interval (``labeltool.rounds.proposal``). The
simulated reviewer then decides the whole batch: ``careful`` accepts the right suggestions and
relabels the wrong ones with the true class; ``trusting`` accepts everything, as a user who
clicks "accept batch" would. As in the app, each round's anchor check is offered the previous
round's fold heads and reuses them when the anchors are unchanged, and the shares extend its
anchor neighbours (``--fresh-fold-heads``: both afresh every round, with the round's seed). The anchors follow the app's rule (``labeltool.data.anchors``):
the seed, plus the labels of every round in which the reviewer corrected something; those
rounds' observed precision also corrects the next estimate (``review_bias``), as in the app. Printed per round: stated vs true precision, the
interval, the calibrated per-suggestion probabilities (pooled ECE), the estimated vs true
accuracy of the remainder, and for comparison the estimate the app stated before (mean raw
confidence, replaced by the acceptance rate of past reviews once 30 were reviewed).

    python benchmarks/bench_calibration.py --datasets sample fashion_mnist cifar10
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _common
import numpy as np
from _datasets import balanced_seed, stratified_subset
from _features import load_features

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.eval.calibration import (
    calibration_table,
    estimated_precision,
    expected_calibration_error,
    review_bias,
)
from labeltool.models.heads import PRECISIONS
from labeltool.rounds import anchor_check
from labeltool.rounds.proposal import propose_round
from labeltool.rounds.step import RoundInputs, step

REVIEWERS = ("careful", "trusting")


def sample_features(cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Features (the app's default backbone and size) of the bundled sample: ``x [N, F]``,
    true ``y [N]``, seed ``labels [N]`` (-1 = unlabeled) and the class names."""
    from labeltool.session import LabelingSession

    src = _common.REPO / "sample_data"
    work = cache / "sample_calibration"
    if not (work / "images").is_dir():
        shutil.copytree(src, work / "images")
    with LabelingSession.open(work / "images", project_dir=work / "project") as s:
        s.embed()
        pool, classes = s.pool(), s.classes
        rows = {r.id: r.relpath for r in s.store.images()}
        state = s.label_state()
        labels = np.array([state.labels.get(int(i), -1) for i in pool.ids], dtype=np.int64)
        x = np.asarray(pool.features[np.arange(len(pool.ids))], dtype=np.float32)
        relpaths = [rows[int(i)] for i in pool.ids]
    with open(src / "unlabeled_labels.csv", newline="") as f:
        truth = {r["path"]: r["label"] for r in csv.DictReader(f)}
    y = np.array([classes.index(truth.get(p, p.split("/")[0])) for p in relpaths], dtype=np.int64)
    return x, y, labels, classes


def dataset(name: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], int]:
    """``(x, y, seed labels, classes, batch size)`` of one benchmark dataset."""
    cache = _common.default_cache_dir()
    if name == "sample":
        x, y, labels, classes = sample_features(cache)
        return x, y, labels, classes, SuggestConfig().batch_size or 100
    fs = load_features(name, "pretrained", args.image_size, cache, subset=args.subset)
    idx = stratified_subset(fs.y_train, args.pool, args.seed)
    x, y = np.asarray(fs.train[idx], dtype=np.float32), fs.y_train[idx]
    labels = np.full(len(y), -1, dtype=np.int64)
    seeds = balanced_seed(y, args.per_class, args.seed)
    labels[seeds] = y[seeds]
    return x, y, labels, list(fs.classes), max(1, math.ceil(args.batch_percent / 100 * (labels < 0).sum()))


def previous_estimate(conf: np.ndarray, past_conf: list[float], past_acc: list[bool]) -> float:
    """What the app stated before: the mean confidence, or the past acceptance rate per bin."""
    if len(past_conf) >= 30:
        return estimated_precision(conf, calibration_table(past_conf, past_acc, bins=10))
    return estimated_precision(conf)


def run(name: str, reviewer: str, args: argparse.Namespace) -> dict[str, Any]:
    x, y, labels, classes, batch = dataset(name, args)
    ids = np.arange(len(y), dtype=np.int64)
    anchors = labels >= 0
    c = len(classes)
    tcfg = TrainConfig(seed=args.seed, max_steps=args.max_steps, min_steps=min(TrainConfig().min_steps, args.max_steps),
                       precision=args.train_precision)
    scfg = SuggestConfig(batch_size=batch)
    state, rounds, probs_all, right_all, carried = None, [], [], [], None
    past_conf: list[float] = []
    past_acc: list[bool] = []
    stated: dict[int, float] = {}
    reviews: dict[int, tuple[int, int]] = {}
    for r in range(1, args.max_rounds + 1):
        if not (labels < 0).any():
            break
        t0 = time.perf_counter()
        res = step(RoundInputs(ids, x, labels, classes), replace(tcfg, seed=args.seed * 1000 + r), state,
                   with_metrics=False)
        state = res.state
        prop = propose_round(x, labels, ids, res.embeddings, res.probs, ids, c, classes, tcfg, scfg, anchors=anchors,
                             seed=args.seed + r, bias=review_bias(stated, reviews),
                             carried=None if args.fresh_fold_heads else carried)
        carried = prop.carried
        secs = time.perf_counter() - t0
        if not prop.suggestions:
            break
        s_ids = np.array([s.image_id for s in prop.suggestions], dtype=np.int64)
        s_cls = np.array([s.class_id for s in prop.suggestions], dtype=np.int64)
        s_conf = np.array([s.confidence for s in prop.suggestions])
        right = s_cls == y[s_ids]
        if prop.check is not None:
            probs_all.append(prop.check.right(s_ids, s_cls)[0])
            right_all.append(right)
        unl = np.flatnonzero(labels < 0)
        cand_right = (prop.candidate_classes == y[prop.candidate_ids]).sum()
        b, cov = prop.batch, prop.coverage
        rounds.append({
            "round": r, "batch": int(s_ids.size), "true": float(right.mean()), "stated": b.value, "low": b.low,
            "high": b.high, "previous": previous_estimate(s_conf, past_conf, past_acc),
            "held_out_acc": None if prop.check is None else prop.check.accuracy,
            "remainder_true": float(cand_right / unl.size), "remainder_stated": None if cov is None else cov.accuracy.value,
            "remainder_low": None if cov is None else cov.accuracy.low, "remainder_high": None if cov is None else cov.accuracy.high,
            "reviews_needed": None if cov is None else cov.reviews_needed,
            "label_accuracy": float((labels[labels >= 0] == y[labels >= 0]).mean()), "flags": len(prop.flags),
            "seconds": round(secs, 2),
        })
        past_conf += s_conf.tolist()
        past_acc += (right if reviewer == "careful" else np.ones_like(right)).tolist()
        labels[s_ids] = y[s_ids] if reviewer == "careful" else s_cls
        stated[r] = b.value
        if reviewer == "careful" and not right.all():  # a round with a correction: reviewed, as the app counts it
            anchors[s_ids] = True
            reviews[r] = (int(right.sum()), int((~right).sum()))
        print(f"{name:14s} {reviewer:8s} r{r:<2d} n={s_ids.size:4d} true {right.mean():.3f} stated {b.value:.3f} "
              f"[{b.low:.3f}, {b.high:.3f}] before {rounds[-1]['previous']:.3f} | remainder true "
              f"{rounds[-1]['remainder_true']:.3f} stated {rounds[-1]['remainder_stated'] or float('nan'):.3f} "
              f"| labels right {rounds[-1]['label_accuracy']:.3f} flags {len(prop.flags)} {secs:.1f}s", flush=True)
    err = np.array([abs(rw["stated"] - rw["true"]) for rw in rounds])
    prev = np.array([abs(rw["previous"] - rw["true"]) for rw in rounds])
    inside = np.array([rw["low"] <= rw["true"] <= rw["high"] for rw in rounds])
    rem = np.array([abs(rw["remainder_stated"] - rw["remainder_true"]) for rw in rounds
                    if rw["remainder_stated"] is not None])
    ece = (expected_calibration_error(np.concatenate(probs_all), np.concatenate(right_all))
           if probs_all else float("nan"))
    return {"dataset": name, "reviewer": reviewer, "rounds": rounds, "mae": float(err.mean()),
            "max_error": float(err.max()), "previous_mae": float(prev.mean()), "previous_max": float(prev.max()),
            "interval_coverage": float(inside.mean()), "ece": ece,
            "remainder_mae": float(rem.mean()) if rem.size else None,
            "remainder_max": float(rem.max()) if rem.size else None,
            "final_label_accuracy": float((labels[labels >= 0] == y[labels >= 0]).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["sample", "fashion_mnist", "cifar10"])
    ap.add_argument("--reviewers", nargs="+", default=list(REVIEWERS), choices=REVIEWERS)
    ap.add_argument("--image-size", type=int, default=64, help="benchmark datasets only (sample: app default)")
    ap.add_argument("--subset", type=int, default=6000, help="train images decoded and embedded per dataset")
    ap.add_argument("--pool", type=int, default=5000)
    ap.add_argument("--per-class", type=int, default=10, help="seed labels per class")
    ap.add_argument("--batch-percent", type=float, default=5.0)
    ap.add_argument("--max-rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=TrainConfig().max_steps, help="training steps per head (smoke runs: few)")
    ap.add_argument("--fold-hidden", type=int, default=anchor_check.FOLD_HIDDEN,
                    help="hidden width of the anchor check's fold heads")
    ap.add_argument("--fold-steps", type=int, default=anchor_check.FOLD_STEPS,
                    help="training steps of each of the anchor check's fold heads")
    ap.add_argument("--fresh-fold-heads", action="store_true",
                    help="train the anchor check's heads and search the shares' neighbours afresh every round "
                         "instead of carrying them over")
    ap.add_argument("--train-precision", default=TrainConfig().precision, choices=PRECISIONS,
                    help="the heads' products while training (TrainConfig.precision)")
    ap.add_argument("--out", default="calibration", help="result name under benchmarks/results (.json added)")
    args = ap.parse_args()
    anchor_check.FOLD_HIDDEN, anchor_check.FOLD_STEPS = args.fold_hidden, args.fold_steps
    runs = [run(d, rv, args) for d in args.datasets for rv in args.reviewers]
    print(_common.table(["dataset", "reviewer", "rounds", "MAE", "max err", "in 90% interval", "ECE", "before: MAE",
                         "before: max", "remainder MAE", "final labels right"],
                        [[r["dataset"], r["reviewer"], len(r["rounds"]), r["mae"], r["max_error"], r["interval_coverage"],
                          r["ece"], r["previous_mae"], r["previous_max"], r["remainder_mae"], r["final_label_accuracy"]]
                         for r in runs]))
    fold_heads = "afresh each round" if args.fresh_fold_heads else "reused while the anchors are unchanged"
    _common.write_json(args.out, {**_common.environment(), "args": vars(args), "fold_heads": fold_heads, "runs": runs})


if __name__ == "__main__":
    main()

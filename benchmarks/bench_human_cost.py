"""What the person pays to label a whole pool, labeltool against the alternatives.

    python benchmarks/bench_human_cost.py                         # CIFAR-10 (10k pool) + Fashion-MNIST (60k)
    python benchmarks/bench_human_cost.py --datasets cifar10 --pool 2000 --image-size 64
    python benchmarks/bench_human_cost.py --datasets synthetic --pool 600   # smoke

Start from 10 labels per class; each round a batch (5% of the pool by default) goes to a
simulated reviewer who accepts right suggestions and corrects wrong ones; retrain; repeat until
the pool is labeled. Headline: human corrections per image (the person picks the class: a
correction or a hand label) and reviews per image (every decision). Methods: see ``_review``.
The precision–coverage curve (from the first round's ranking) says what fraction of the pool would
be labeled at what precision if every suggestion above a threshold were accepted unseen.
Writes benchmarks/results/human_cost.json and human_cost_curves.png (matplotlib, if installed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import default_cache_dir, environment, out_dir, run_tasks, set_threads, table, write_json
from _features import load_features
from _review import DEFAULT_WALK_T, METHODS, run_review

from labeltool.losses import get_loss_class

POOLS = {"cifar10": 10000, "fashion_mnist": None, "synthetic": None, "synthetic_images": None}
HEADERS = ["dataset", "method", "rounds", "reviewed", "accepted", "corrected", "by hand", "corrections/img",
           "reviews/img", "sugg. precision", "round-1 auto acc", "final acc", "min", "device"]


def method_label(task: dict[str, Any]) -> str:
    """The method's name, with the walk temperature where it is not the library default."""
    t = float(task.get("walk_temperature", DEFAULT_WALK_T))
    return task["method"] + (f" T={t:g}" if "walk" in task["method"] and t != DEFAULT_WALK_T else "")


def _method_key(label: str) -> tuple[int, str]:
    order = {m: i for i, m in enumerate(METHODS)}
    return order.get(label.split(" ")[0], 99), label


def summary_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for r in results:
        if r.get("status") != "done":
            continue
        t = r["task"]
        rows.append([t["dataset"], method_label(t), len([x for x in r["rounds"] if "note" not in x]), r["reviewed"],
                     r["accepted"], r["corrected"], r["hand_labeled"], r["corrections_per_image"],
                     r["reviews_per_image"], r["suggestion_precision"], r["first_round_auto_accuracy"],
                     r["final_label_accuracy"], round(r["seconds"] / 60, 1), r["device"]])
    rows.sort(key=lambda x: (x[0], _method_key(x[1])))
    return rows


def round_rows(r: dict[str, Any]) -> list[list[Any]]:
    return [[x["round"], x["reviewed"], x["accepted"], x["corrected"], x["hand"], x["precision"], x["coverage"]]
            for x in r["rounds"]]


def plot_curves(results: list[dict[str, Any]], path: Path) -> Path | None:
    """Precision–coverage curves, one panel per dataset; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (the curves are in the JSON)")
        return None
    datasets = sorted({r["task"]["dataset"] for r in results if r.get("curve")})
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    labels = sorted({method_label(r["task"]) for r in results if r.get("curve")}, key=_method_key)
    colours = {m: f"C{i}" for i, m in enumerate(labels)}
    for ax, ds in zip(axes[0], datasets, strict=False):
        for r in sorted(results, key=lambda r: _method_key(method_label(r["task"]))):
            if r["task"]["dataset"] == ds and r.get("curve"):
                m = method_label(r["task"])
                cov = [p["coverage"] for p in r["curve"]]
                ax.plot(cov, [p["precision"] for p in r["curve"]], label=m, color=colours[m])
        ax.set_title(f"{ds}: accept every suggestion above a threshold (round 1)")
        ax.set_xlabel("coverage (fraction of the pool labeled)")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["cifar10", "fashion_mnist"])
    ap.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                    help="default: all (labeltool_softmax only where --loss has a classifier)")
    ap.add_argument("--pool", type=int, default=None, help="pool size (default: 10k CIFAR-10, all Fashion-MNIST)")
    ap.add_argument("--per-class", type=int, default=10, help="seed labels per class")
    ap.add_argument("--batch-percent", type=float, default=5.0, help="batch = this %% of the images to label")
    ap.add_argument("--max-rounds", type=int, default=100)
    ap.add_argument("--loss", default="cross_entropy", help="loss of the labeltool methods")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--walk-temperatures", nargs="+", type=float, default=[DEFAULT_WALK_T],
                    help=f"T of the walk sources, one run each (library default {DEFAULT_WALK_T:g})")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--subset", type=int, default=None, help="features of a stratified subset only")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--knn-backend", default="auto")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--time-budget", type=float, default=None)
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    ap.add_argument("--rounds-table", action="store_true", help="also print every method's rounds")
    ap.add_argument("--name", default="human_cost")
    args = ap.parse_args(argv)
    try:
        has_classifier = get_loss_class(args.loss).has_classifier
    except ValueError as e:
        ap.error(str(e))
    if args.methods is None:
        args.methods = [m for m in METHODS if has_classifier or m != "labeltool_softmax"]
    elif "labeltool_softmax" in args.methods and not has_classifier:
        ap.error(f"labeltool_softmax needs a loss with a classifier; --loss {args.loss} has none")
    t0 = time.perf_counter()
    set_threads(args.threads)
    features = {}
    for ds in args.datasets:
        fs = load_features(ds, "pretrained", args.image_size, args.cache_dir, subset=args.subset, device=args.device)
        features[ds] = fs.meta
    train = {"max_steps": args.max_steps} if args.max_steps else {}
    tasks = [{"dataset": ds, "method": m, "seed": s, "pool": args.pool or POOLS.get(ds), "per_class": args.per_class,
              "batch_percent": args.batch_percent, "max_rounds": args.max_rounds, "loss": args.loss,
              "walk_temperature": temp, "train": train, "image_size": args.image_size, "subset": args.subset,
              "cache_dir": str(args.cache_dir), "device": args.device, "knn_backend": args.knn_backend}
             for s in args.seeds for ds in args.datasets for m in args.methods
             for temp in (args.walk_temperatures if "walk" in m else [DEFAULT_WALK_T])]
    env = environment(None if args.device == "auto" else args.device)
    results: list[dict[str, Any]] = []

    def save(unfinished: list[dict[str, Any]] | None = None) -> None:
        write_json(args.name, {**env, "seeds": args.seeds, "args": {k: str(v) for k, v in vars(args).items()},
                               "features": features, "results": results, "unfinished": unfinished or [],
                               "elapsed_s": round(time.perf_counter() - t0, 1)})

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        t = r["task"]
        print(f"[{time.perf_counter() - t0:6.0f}s] {t['dataset']}/{method_label(t)}: {r['status']} "
              f"corrections/img {r.get('corrections_per_image')} ({r.get('seconds', '-')} s)", flush=True)
        save()

    left = run_tasks(run_review, tasks, jobs=args.jobs, on_done=done, time_budget=args.time_budget)
    save(left)
    png = plot_curves(results, out_dir() / f"{args.name}_curves.png")
    print(table(HEADERS, summary_rows(results)))
    if args.rounds_table:
        for r in results:
            if r.get("status") == "done":
                print(f"\n{r['task']['dataset']} / {method_label(r['task'])} (batch {r['batch']})")
                print(table(["round", "reviewed", "accepted", "corrected", "by hand", "precision", "coverage"],
                            round_rows(r)))
    if png:
        print(f"wrote {png}")
    if left:
        print(f"{len(left)} runs not finished within the time budget")


if __name__ == "__main__":
    main()

"""The Sahito et al. self-training protocol with labeltool's losses, next to the paper's numbers.

    python benchmarks/bench_paper_protocol.py                      # CIFAR-10 + Fashion-MNIST, 3 seeds
    python benchmarks/bench_paper_protocol.py --datasets cifar10 --losses cross_entropy triplet \\
        --seeds 0 --iterations 5 --subset 5000 --image-size 64    # a reduced run
    python benchmarks/bench_paper_protocol.py --datasets synthetic --iterations 2   # smoke
    python benchmarks/bench_paper_protocol.py --modes head finetune --device cuda   # + fine-tune mode (GPU)

CIFAR-10: balanced 4000-label seed, the rest of the 50k training images unlabeled, 5% of the
remaining pool per meta-iteration; Fashion-MNIST: 100 labels, 10%. 25 meta-iterations, 1-NN
confidence, stratified selection, the head is never re-initialised, accuracy on the test images.
Head mode on frozen EfficientNet-Lite0 features (pretrained, or the same network randomly
initialised), extracted once and cached. Fine-tune mode (``--modes finetune``) trains the
backbone's last ``--ft-stages`` stages too, ``--ft-steps`` steps per meta-iteration, and
re-extracts the features after each; its runs go one at a time in this process (they start
their own data-loading workers). Accuracy shown: the loss's classifier where it has one,
else 1-NN to the labeled (seed + pseudo-labeled) training images. Writes
benchmarks/results/paper_protocol.json (partial results are written as runs finish).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import default_cache_dir, environment, run_tasks, set_threads, table, write_json
from _features import load_features
from _protocol import MODES, PAPER, VARIANTS, primary, run_protocol

from labeltool.losses import get_loss_class, list_losses

PAPER_LOSSES = ["cross_entropy", "triplet", "contrastive", "arcface"]
DEFAULTS = {"cifar10": {"labels": 4000, "percent": 5.0}, "fashion_mnist": {"labels": 100, "percent": 10.0},
            "synthetic": {"labels": 100, "percent": 10.0}, "synthetic_images": {"labels": 50, "percent": 10.0}}


def build_tasks(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run, in priority order: seed by seed, pretrained before random, variants last
    (fine-tune runs are taken apart by ``main`` and run after the head runs)."""
    losses = list_losses() if args.losses == ["all"] else args.losses
    random_losses = list_losses() if args.random_losses == ["all"] else args.random_losses
    train: dict[str, Any] = {}
    if args.epochs is not None:
        train["epochs"] = args.epochs
    if args.max_steps is not None:
        train["max_steps"] = args.max_steps
    finetune: dict[str, Any] = {"stages": args.ft_stages, "steps": args.ft_steps}
    if args.ft_workers is not None:
        finetune["num_workers"] = args.ft_workers
    tasks = []
    for mode, seed in ((m, s) for m in args.modes for s in args.seeds):
        for variant in args.variants:
            for dataset in args.datasets:
                for init in args.inits:
                    if init == "random" and dataset not in args.random_datasets:
                        continue
                    names = random_losses if init == "random" else losses
                    if variant != "paper":
                        names = [n for n in names if n in args.variant_losses]
                    if variant == "softmax":
                        names = [n for n in names if get_loss_class(n).has_classifier]
                    for loss in names:
                        d = DEFAULTS.get(dataset, DEFAULTS["synthetic"])
                        tasks.append({
                            "mode": mode, "dataset": dataset, "init": init, "loss": loss, "seed": seed, "variant": variant,
                            "labels": args.labels or d["labels"], "percent": args.percent or d["percent"],
                            "iterations": args.iterations, "image_size": args.image_size, "subset": args.subset,
                            "cache_dir": str(args.cache_dir), "device": args.device,
                            "knn_backend": args.knn_backend, "train": train, "all_steps": args.all_steps,
                            **({"finetune": finetune, "finetune_all_steps": args.ft_all_steps}
                               if mode == "finetune" else {}),
                        })
    return tasks


def run_gain(run: dict[str, Any], clf: bool) -> float | None:
    """Self-trained minus labels-only accuracy of one run (paired, so seed-to-seed spread cancels)."""
    first, last = primary(run["iterations"][0], clf), primary(run["iterations"][-1], clf)
    return None if first is None or last is None else last - first


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (dataset, mode, init, loss, variant), in %."""
    groups: dict[tuple[str, str, str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        if r.get("status") == "done" or str(r.get("status", "")).startswith("partial"):
            t = r["task"]
            variant = t["variant"] + ("" if r["status"] == "done" else " (partial)")
            groups.setdefault((t["dataset"], t.get("mode", "head"), t["init"], t["loss"], variant), []).append(r)
    rows = []
    for (dataset, mode, init, loss, variant), runs in groups.items():
        clf = runs[0]["has_classifier"]

        def stat(vals: list[float | None]) -> str:
            v = np.array([x for x in vals if x is not None], dtype=float) * 100
            if v.size == 0:
                return "-"
            return f"{v.mean():.2f}" + (f" ± {v.std(ddof=1):.2f}" if v.size > 1 else "")

        paper = PAPER.get((dataset, init, loss)) if variant.startswith("paper") else None
        rows.append({
            "dataset": dataset, "mode": mode, "init": init, "loss": loss, "variant": variant, "seeds": len(runs),
            "eval": "softmax" if clf else "1-NN",
            "labels_only": stat([primary(r["iterations"][0], clf) for r in runs]),
            "self_trained": stat([primary(r["iterations"][-1], clf) for r in runs]),
            "gain": stat([run_gain(r, clf) for r in runs]),
            "all_labels": stat([primary(r.get("all_labels"), clf) for r in runs]),
            "self_trained_1nn": stat([r["iterations"][-1]["acc_1nn"] for r in runs]),
            "pseudo_precision": stat([r["iterations"][-1]["pseudo_precision"] for r in runs]),
            "iterations": min(len(r["iterations"]) for r in runs) - 1,
            "paper": "/".join(f"{p:.2f}" for p in paper) if paper else "-",
            "min_per_run": f"{float(np.mean([r['seconds'] for r in runs])) / 60:.1f}",
            "device": runs[0]["device"],
        })
    order = {v: i for i, v in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (r["dataset"], r["mode"] != "head", r["init"] != "pretrained", order.get(r["variant"], 2), r["loss"]))
    return rows


HEADERS = ["dataset", "mode", "init", "loss", "variant", "seeds", "eval", "labels only", "self-trained", "gain",
           "all labels", "ST 1-NN", "pseudo prec", "iters", "paper (labels/ST/all)", "min/run", "device"]


def table_rows(summary: list[dict[str, Any]]) -> list[list[Any]]:
    keys = ["dataset", "mode", "init", "loss", "variant", "seeds", "eval", "labels_only", "self_trained", "gain",
            "all_labels", "self_trained_1nn", "pseudo_precision", "iterations", "paper", "min_per_run", "device"]
    return [[r[k] for k in keys] for r in summary]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["cifar10", "fashion_mnist"])
    ap.add_argument("--losses", nargs="+", default=PAPER_LOSSES, help="names, or 'all'")
    ap.add_argument("--inits", nargs="+", default=["pretrained", "random"], choices=["pretrained", "random"])
    ap.add_argument("--random-losses", nargs="+", default=["cross_entropy"], help="losses run on random-init features")
    ap.add_argument("--random-datasets", nargs="+", default=["cifar10", "synthetic_images"])
    ap.add_argument("--variants", nargs="+", default=["paper"], choices=list(VARIANTS),
                    help="labeltool = the default distance-weighted 10-NN vote confidence; softmax = the loss's "
                         "classifier (losses that have one)")
    ap.add_argument("--variant-losses", nargs="+", default=["cross_entropy"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--modes", nargs="+", default=["head"], choices=MODES,
                    help="head: frozen backbone; finetune: the backbone's last stages train too (GPU advised)")
    ap.add_argument("--ft-stages", default="2", help="fine-tune mode: last backbone stages trained ('all' = every one)")
    ap.add_argument("--ft-steps", type=int, default=500, help="fine-tune mode: steps per meta-iteration")
    ap.add_argument("--ft-all-steps", type=int, default=3000, help="fine-tune mode: steps of the all-labels reference")
    ap.add_argument("--ft-workers", type=int, default=None, help="fine-tune mode: data-loading workers")
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--labels", type=int, default=None, help="seed labels in total (default per dataset)")
    ap.add_argument("--percent", type=float, default=None, help="selection per meta-iteration (default per dataset)")
    ap.add_argument("--subset", type=int, default=None, help="stratified subset of the training images")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--all-steps", type=int, default=9000, help="steps of the all-labels reference (0 = skip)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--knn-backend", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds; unfinished runs are reported")
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    ap.add_argument("--extract-only", action="store_true")
    ap.add_argument("--name", default="paper_protocol", help="result file name")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    set_threads(args.threads)
    tasks = build_tasks(args)
    features = {}
    for key in dict.fromkeys((t["dataset"], t["init"]) for t in tasks):
        fs = load_features(key[0], key[1], args.image_size, args.cache_dir, subset=args.subset, device=args.device)
        features["/".join(key)] = fs.meta
        print(f"features {key[0]}/{key[1]}: train {fs.train.shape}, test {fs.test.shape}, "
              f"{fs.meta.get('img_per_s', '-')} img/s on {fs.meta.get('device_name', '-')}", flush=True)
    if args.extract_only:
        return
    env = environment(None if args.device == "auto" else args.device)
    results: list[dict[str, Any]] = []

    def save(unfinished: list[dict[str, Any]] | None = None) -> None:
        write_json(args.name, {**env, "seeds": args.seeds, "args": {k: str(v) for k, v in vars(args).items()},
                               "features": features, "summary": summarize(results), "runs": results,
                               "unfinished": unfinished or [], "elapsed_s": round(time.perf_counter() - t0, 1)})

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        t = r["task"]
        last = r.get("iterations", [{}])[-1]
        print(f"[{time.perf_counter() - t0:6.0f}s] {t['dataset']}/{t['mode']}/{t['init']}/{t['loss']}/{t['variant']} "
              f"seed {t['seed']}: {r['status']} acc_1nn {last.get('acc_1nn')} acc_clf {last.get('acc_clf')} "
              f"({r.get('seconds', '-')} s)", flush=True)
        save()

    partial_dir = Path(tempfile.mkdtemp(prefix="paper_protocol_"))
    for i, t in enumerate(tasks):
        t.update(id=i, partial_dir=str(partial_dir))

    def partial(task: dict[str, Any]) -> dict[str, Any] | None:
        path = partial_dir / f"{task['id']}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    head_tasks = [t for t in tasks if t["mode"] != "finetune"]
    ft_tasks = [t for t in tasks if t["mode"] == "finetune"]
    left = run_tasks(run_protocol, head_tasks, jobs=args.jobs, on_done=done, time_budget=args.time_budget,
                     partial=partial) if head_tasks else []
    if ft_tasks:  # in this process: pool workers may not start the data-loading workers
        budget = None if args.time_budget is None else max(0.0, args.time_budget - (time.perf_counter() - t0))
        left += run_tasks(run_protocol, ft_tasks, jobs=1, on_done=done, time_budget=budget, partial=partial)
    shutil.rmtree(partial_dir, ignore_errors=True)
    results.extend(r for r in left if "iterations" in r)
    save([r for r in left if "iterations" not in r])
    print(table(HEADERS, table_rows(summarize(results))))
    if left:
        print(f"{len(left)} runs not finished within the time budget "
              f"({sum('iterations' in r for r in left)} of them partly: rows marked '(partial)')")


if __name__ == "__main__":
    main()

"""Speed and memory at scale on synthetic features: kNN (faiss vs scikit-learn), a whole round
(train head → embed with head → kNN → propose) on memory-mapped features, and UMAP.

    python benchmarks/bench_speed.py                                  # everything (minutes)
    python benchmarks/bench_speed.py --parts knn --knn-sizes 10000 100000
    python benchmarks/bench_speed.py --knn-sizes 2000 --round-sizes 2000 --umap-sizes 500   # smoke

kNN: ``N`` query vectors (the unlabeled pool, 64-d, as the head embeds them) against ``--labeled``
labeled vectors, ``k = 10``, exact; labeltool's ``knn_search`` (faiss-cpu), faiss's flat index
alone, and scikit-learn ``NearestNeighbors`` (its defaults), one run each; beside them the two
halves of a naive numpy search (distance products, top-k selection) timed separately.
Round: backbone features ``[N, 1280]`` float16 in a ``np.memmap`` file on disk, ``--labeled`` of
them labeled; labeltool's default ``TrainConfig`` and ``SuggestConfig``, timed part by part as the
session runs a round and its proposal (``_speed_rounds.py``); each size and ``--variants`` entry
runs in its own process so its peak memory is its own (peak RSS counts touched memmap pages;
``anon`` does not). Before/after in one run, alternating (``before`` = a copy of an earlier
labeltool, e.g. ``git archive HEAD labeltool | tar -x -C /tmp/before``)::

    python benchmarks/bench_speed.py --parts round --round-sizes 50000 1000000 --round-repeats 2 \
        --variants before:code=/tmp/before after after-float32:precision=float32 --name speed_rounds
UMAP: ``labeltool.ui.figures.umap_2d`` on 64-d embeddings; the first call includes numba's compilation.
Writes benchmarks/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    default_cache_dir,
    environment,
    out_dir,
    set_threads,
    table,
    write_json,
)
from _speed_rounds import parse_variant, round_child, round_summary, round_table, thread_env, with_overlap

CLASSES = 10


def clustered(n: int, dim: int, seed: int, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points around ``CLASSES`` Gaussian centres (and their classes)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES, dim)).astype(np.float32) * 2
    y = rng.integers(0, CLASSES, n)
    return (centres[y] + rng.standard_normal((n, dim), dtype=np.float32)).astype(dtype), y


def bench_knn(n: int, labeled: int, k: int, seed: int) -> dict[str, Any]:
    """One run each of labeltool/faiss/sklearn on the same queries and base."""
    from sklearn.neighbors import NearestNeighbors

    from labeltool.suggest.knn import knn_search

    q, _ = clustered(n, 64, seed)
    base, _ = clustered(labeled, 64, seed + 1)
    row: dict[str, Any] = {"queries": n, "base": labeled, "dim": 64, "k": k}
    t = time.perf_counter()
    _, i_lt = knn_search(q, base, k, backend="faiss-cpu")
    row["labeltool_faiss_s"] = round(time.perf_counter() - t, 3)
    try:
        import faiss

        t = time.perf_counter()
        index = faiss.IndexFlatL2(64)
        index.add(base)
        index.search(q, k)
        row["faiss_flat_s"] = round(time.perf_counter() - t, 3)
        row["faiss_threads"] = faiss.omp_get_max_threads()
    except ImportError:
        row["faiss_flat_s"] = None
    t = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=k).fit(base)
    _, i_sk = nn.kneighbors(q)
    row["sklearn_s"] = round(time.perf_counter() - t, 3)
    row["sklearn_method"] = nn._fit_method
    row["sklearn_over_labeltool"] = round(row["sklearn_s"] / row["labeltool_faiss_s"], 2)
    row["same_1nn"] = round(float((i_lt[:, 0] == i_sk[:, 0]).mean()), 5)
    row.update(product_and_selection(q, base, k))
    return row


def product_and_selection(q: np.ndarray, base: np.ndarray, k: int, chunk: int = 1 << 15) -> dict[str, float]:
    """Seconds of the two halves of an exact search done naively with numpy, in chunks of queries:
    the distance products ``q·bᵀ`` ``[chunk, B]`` and the top-``k`` selection (``argpartition``)."""
    gemm = select = 0.0
    norms = (base * base).sum(1)
    for start in range(0, len(q), chunk):
        t = time.perf_counter()
        d = norms - 2.0 * (q[start : start + chunk] @ base.T)  # [chunk, B], ‖q‖² left out (same per row)
        gemm += time.perf_counter() - t
        t = time.perf_counter()
        np.argpartition(d, k - 1, axis=1)[:, :k]
        select += time.perf_counter() - t
    return {"numpy_product_s": round(gemm, 3), "numpy_topk_s": round(select, 3)}


def make_features(path: Path, n: int, dim: int, seed: int) -> None:
    """Write ``n`` clustered float16 feature rows to a ``.npy`` file, chunk by chunk."""
    if path.is_file() and np.load(path, mmap_mode="r").shape == (n, dim):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float16, shape=(n, dim))
    labels = np.empty(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES, dim)).astype(np.float32) * 0.3
    step = 50_000
    for s in range(0, n, step):
        m = min(step, n - s)
        y = rng.integers(0, CLASSES, m)
        out[s : s + m] = centres[y] + rng.standard_normal((m, dim), dtype=np.float32)
        labels[s : s + m] = y
    out.flush()
    del out
    np.save(path.with_name(path.stem + "_labels.npy"), labels)
    path.with_suffix(".tmp.npy").replace(path)


def umap_child(sizes: list[int], threads: int | None) -> list[dict[str, Any]]:
    """UMAP of clustered 64-d points at each size, in order, in one process."""
    set_threads(threads)
    from labeltool.ui.figures import umap_2d

    out = []
    for i, n in enumerate(sizes):
        x, _ = clustered(n, 64, seed=n)
        t = time.perf_counter()
        umap_2d(x)
        out.append({"points": n, "seconds": round(time.perf_counter() - t, 1),
                    "note": "includes numba compilation" if i == 0 else "after compilation"})
    return out


def _child(args: list[str], env: dict[str, str] | None = None) -> Any:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["knn", "round", "umap"], choices=["knn", "round", "umap"])
    ap.add_argument("--knn-sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--round-sizes", nargs="+", type=int, default=[10_000, 50_000, 100_000, 1_000_000])
    ap.add_argument("--umap-sizes", nargs="+", type=int, default=[10_000, 50_000])
    ap.add_argument("--labeled", type=int, default=4000)
    ap.add_argument("--dim", type=int, default=1280, help="backbone feature dimension")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    ap.add_argument("--name", default="speed")
    ap.add_argument("--variants", nargs="+", default=["this"],
                    help="round variants, alternated: NAME[:code=DIR,steps=N,precision=P,train_precision=P,loss=L,warm=1,fresh_check=1,unreviewed=1] "
                         "(_speed_rounds.py)")
    ap.add_argument("--round-repeats", type=int, default=1, help="runs of each round variant at each size")
    ap.add_argument("--round-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="this", help=argparse.SUPPRESS)
    ap.add_argument("--umap-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--features", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.round_child is not None:
        print(json.dumps(round_child(args.features, args.round_child, args.labeled, args.threads,
                                     parse_variant(args.variant))))
        return
    if args.umap_child:
        print(json.dumps(umap_child(args.umap_sizes, args.threads)))
        return
    threads = ["--threads", str(args.threads)] if args.threads else []
    env = environment("cpu")
    previous = out_dir() / f"{args.name}.json"
    result: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    result = {k: v for k, v in result.items() if k in ("knn", "round", "umap", "features_file", "runs")}
    result.update({**env, "seed": args.seed, "args": {k: str(v) for k, v in vars(args).items()}})
    # parts not run now keep their earlier results; "runs" says which run produced which part
    result.setdefault("runs", {}).update({p: {"command": env["command"], "started": env["started"],
                                              "load_average": env["load_average"]} for p in args.parts})
    if "knn" in args.parts:
        result["knn"] = []
        for n in args.knn_sizes:
            result["knn"].append(bench_knn(n, args.labeled, 10, args.seed))
            write_json(args.name, result)
            print(json.dumps(result["knn"][-1]), flush=True)
    if "round" in args.parts:
        path = args.cache_dir / "speed" / f"features_{max(args.round_sizes)}x{args.dim}.npy"
        t = time.perf_counter()
        make_features(path, max(args.round_sizes), args.dim, args.seed)
        result["features_file"] = {"path": str(path), "write_s": round(time.perf_counter() - t, 1)}
        result["round"] = []
        for v in args.variants:
            parse_variant(v)  # a bad spec fails before any round runs
        for n in args.round_sizes:
            for _ in range(args.round_repeats):
                for v in args.variants:
                    row = _child(["--round-child", str(n), "--features", str(path), "--labeled", str(args.labeled),
                                  "--variant", v, *threads], env=thread_env(args.threads))
                    result["round"].append(row)
                    result["round"] = with_overlap(result["round"])
                    write_json(args.name, result)
                    print(json.dumps({k: x for k, x in row.items() if k != "batch_ids"}), flush=True)
    if "umap" in args.parts:
        result["umap"] = _child(["--umap-child", "--umap-sizes", *map(str, args.umap_sizes), *threads])
        write_json(args.name, result)
    for p in args.parts:
        result["runs"][p]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    path = write_json(args.name, result)
    print_tables(result)
    print(f"wrote {path}")


def speed_tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """``(title, headers, rows)`` of each part present in a speed result."""
    def dev(part: str) -> str:
        load = result.get("runs", {}).get(part, {}).get("load_average", result.get("load_average"))
        return f"CPU: {result.get('cpu_count')} cores, {result.get('cpu_model')}; load average at start {load}"

    out = []
    if result.get("knn"):
        out.append((f"kNN, exact, k=10, 64-d ({dev('knn')})",
                    ["queries", "labeled", "labeltool faiss s", "faiss flat s", "sklearn s", "sklearn/labeltool",
                     "same 1-NN", "numpy product s", "numpy top-k s"],
                    [[r["queries"], r["base"], r["labeltool_faiss_s"], r.get("faiss_flat_s"), r["sklearn_s"],
                      r["sklearn_over_labeltool"], r["same_1nn"], r.get("numpy_product_s", "-"),
                      r.get("numpy_topk_s", "-")] for r in result["knn"]]))
    if result.get("round"):
        out.append(round_table(result, f"Round on memory-mapped 1280-d float16 features ({dev('round')})"))
        summary = round_summary(result, "The same rounds, minimum over the repeats of each variant")
        if summary is not None:
            out.append(summary)
    if isinstance(result.get("umap"), list):
        out.append((f"UMAP to 2-D of 64-d embeddings ({dev('umap')})", ["points", "seconds", "note"],
                    [[r["points"], r["seconds"], r["note"]] for r in result["umap"]]))
    return out


def print_tables(result: dict[str, Any]) -> None:
    """The tables of a speed result, as text."""
    for title, headers, rows in speed_tables(result):
        print(f"\n{title}")
        print(table(headers, rows))
    if result.get("umap") and not isinstance(result["umap"], list):
        print(f"\nUMAP failed: {result['umap']}")


if __name__ == "__main__":
    main()

"""kNN speed: labeltool's exact search against scikit-learn, and its approximate index against exact.

    python benchmarks/bench_knn.py                                   # both parts (about 30 min on 2 cores)
    python benchmarks/bench_knn.py --parts exact --queries 10000 100000 --dims 64
    python benchmarks/bench_knn.py --parts ann --ann-data mixture fmnist
    python benchmarks/bench_knn.py --queries 2000 --labeled 500 --ann-data mixture --ann-labeled 3000 --ann-queries 500  # smoke

exact: ``Q`` pool rows against ``--labeled`` labeled rows, both drawn from one mixture of 10 class
centres (centres N(0, 4·I), unit noise, rows scaled to unit length as labeltool's kNN sees them),
float32, ``k = 10``. labeltool's ``knn_search`` (backend ``auto``), scikit-learn ``NearestNeighbors``
in its fastest exact algorithm for the data (brute, ball_tree and kd_tree timed on 10,000 queries
first; fit included) and faiss's ``IndexFlatL2`` alone, alternating, ``--repeats`` times; min and
median seconds, and the process's CPU seconds. ``--threads N`` limits faiss's OpenMP, BLAS and
scikit-learn's OpenMP to ``N`` threads (default: each library's own).
ann: labeltool's ``ApproxIndex`` (auto kind, and IVF and HNSW forced) against labeltool's exact
search on the same rows: build and search seconds, recall@1 (the first neighbour is at the exact
first neighbour's distance) and recall@10 (share of the exact 10 found). Data: ``mixture`` (100
classes in 64-d, each varying along 8 random directions plus small noise, unit rows), ``isotropic``
(the exact part's 10-class mixture: within-class variation spans all 64 dimensions, the hard case)
and ``fmnist`` (Fashion-MNIST pixels projected on their 64 principal axes; labeled: the first 50k
training images with their 1-pixel right and down shifts, 150k rows; pool: the other 10k training
and the 10k test images with the same shifts, 60k rows). Writes benchmarks/results/knn.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import environment, out_dir, table, write_json


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def isotropic(n: int, dim: int, seed: int, classes: int = 10) -> np.ndarray:
    """``n`` unit rows of one mixture: ``classes`` centres N(0, 4·I) plus unit Gaussian noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32) * 2
    return unit(centres[rng.integers(0, classes, n)] + rng.standard_normal((n, dim), dtype=np.float32))


def low_rank(n: int, dim: int = 64, seed: int = 0, classes: int = 100, latent: int = 8) -> np.ndarray:
    """``n`` unit rows: ``classes`` centres, each class varying along ``latent`` random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    basis = rng.standard_normal((classes, dim, latent)).astype(np.float32) * (0.5 / np.sqrt(latent))
    y = rng.integers(0, classes, n)
    z = rng.standard_normal((n, latent)).astype(np.float32)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (0.05 / np.sqrt(dim))
    return unit(centres[y] + np.einsum("ndl,nl->nd", basis[y], z) + noise)


def fmnist_pca(dim: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(labeled [150000, dim], pool [60000, dim])`` float32 from Fashion-MNIST (module docstring)."""
    from _datasets import load_fashion_mnist

    ds = load_fashion_mnist()

    def rows(x: np.ndarray) -> np.ndarray:
        parts = [x, np.roll(x, 1, 2), np.roll(x, 1, 1)]
        return np.concatenate(parts).reshape(-1, 28 * 28).astype(np.float32) / 255

    tr, te = rows(ds.x_train[:50_000]), rows(np.concatenate([ds.x_train[50_000:], ds.x_test]))
    mean = tr.mean(0)
    sample = tr[np.random.default_rng(0).choice(len(tr), 20000, replace=False)] - mean
    axes = np.linalg.svd(sample, full_matrices=False)[2][:dim].T
    return ((tr - mean) @ axes).astype(np.float32), ((te - mean) @ axes).astype(np.float32)


def timed(fn: Callable[[], Any], cpu: list[float] | None = None) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` and its result; the process's CPU seconds are appended to ``cpu``."""
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    if cpu is not None:
        cpu.append(round(time.process_time() - c, 3))
    return time.perf_counter() - t, out


def sklearn_best(q: np.ndarray, base: np.ndarray, k: int) -> tuple[str, dict[str, float]]:
    """The fastest exact ``NearestNeighbors`` algorithm on (up to) 10,000 of the queries."""
    from sklearn.neighbors import NearestNeighbors

    sub = q[:10_000]
    secs = {alg: round(timed(lambda a=alg: NearestNeighbors(n_neighbors=k, algorithm=a).fit(base).kneighbors(sub))[0], 3)
            for alg in ("brute", "ball_tree", "kd_tree")}
    return min(secs, key=lambda a: secs[a]), secs


def exact_row(n: int, labeled: int, dim: int, repeats: int, k: int, seed: int, alg: str) -> dict[str, Any]:
    """labeltool / scikit-learn / faiss flat on one size, alternating, ``repeats`` times."""
    import faiss
    from sklearn.neighbors import NearestNeighbors

    from labeltool.suggest.knn import knn_search, resolve_backend

    x = isotropic(n + labeled, dim, seed)
    q, base = x[:n], x[n:]

    def flat() -> Any:
        index = faiss.IndexFlatL2(dim)
        index.add(base)
        return index.search(q, k)

    runs: dict[str, list[float]] = {"labeltool": [], "sklearn": [], "faiss_flat": []}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    fns = {"labeltool": lambda: knn_search(q, base, k),
           "sklearn": lambda: NearestNeighbors(n_neighbors=k, algorithm=alg).fit(base).kneighbors(q),
           "faiss_flat": flat}
    out: dict[str, Any] = {}
    for r in range(repeats):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            secs, out[name] = timed(fns[name], cpu[name])
            runs[name].append(round(secs, 3))
    (d_lt, i_lt), (d_sk, i_sk) = out["labeltool"], out["sklearn"]
    row: dict[str, Any] = {"queries": n, "labeled": labeled, "dim": dim, "k": k, "backend": resolve_backend("auto"),
                           "sklearn_algorithm": alg, "seconds": runs, "cpu_seconds": cpu}
    for name, v in runs.items():
        row[f"{name}_min_s"], row[f"{name}_median_s"] = min(v), round(statistics.median(v), 3)
        row[f"{name}_cpu_median_s"] = round(statistics.median(cpu[name]), 3)
    row["sklearn_over_labeltool_cpu"] = round(row["sklearn_cpu_median_s"] / row["labeltool_cpu_median_s"], 2)
    row["sklearn_over_labeltool_min"] = round(row["sklearn_min_s"] / row["labeltool_min_s"], 2)
    row["sklearn_over_labeltool_median"] = round(row["sklearn_median_s"] / row["labeltool_median_s"], 2)
    row["same_neighbours"] = round(float((i_lt == i_sk).mean()), 6)
    row["max_distance_diff"] = float(np.abs(d_lt - d_sk.astype(np.float64) ** 2).max())
    return row


def recall(d: np.ndarray, i: np.ndarray, ed: np.ndarray, ei: np.ndarray) -> tuple[float, float]:
    """recall@1 (first neighbour at the exact first distance) and recall@10 (exact indices found)."""
    r1 = float(np.mean(d[:, 0] <= ed[:, 0] + 1e-6 * (1 + ed[:, 0])))
    hits = (i[:, :, None] == ei[:, None, :]).any(2).sum(1)
    return round(r1, 4), round(float(hits.mean()) / ei.shape[1], 4)


def ann_rows(name: str, base: np.ndarray, q: np.ndarray, k: int) -> list[dict[str, Any]]:
    """Exact, then the approximate index (auto, then the kind auto did not pick) on one dataset."""
    from labeltool.suggest.ann import ApproxIndex, choose_kind
    from labeltool.suggest.knn import knn_search

    cpu: list[float] = []
    exact_s, (ed, ei) = timed(lambda: knn_search(q, base, k), cpu)
    rows = []
    auto = choose_kind(base.shape[0], q.shape[0])
    for kind in ("auto", *(kd for kd in ("ivf", "hnsw") if kd != auto)):
        build_s, index = timed(lambda kd=kind: ApproxIndex(base, kind=kd, queries=q.shape[0]), cpu)
        search_s, (d, i) = timed(lambda ix=index: ix.search(q, k), cpu)
        r1, r10 = recall(d, i, ed, ei)
        rows.append({"data": name, "labeled": base.shape[0], "queries": q.shape[0], "dim": base.shape[1], "k": k,
                     "asked": kind, "kind": index.kind, "calibration": index.calibration,
                     "exact_s": round(exact_s, 3), "build_s": round(build_s, 3), "search_s": round(search_s, 3),
                     "exact_cpu_s": cpu[0], "build_cpu_s": cpu[-2], "search_cpu_s": cpu[-1],
                     "exact_over_search_cpu": round(cpu[0] / cpu[-1], 1),
                     "exact_over_build_and_search_cpu": round(cpu[0] / (cpu[-2] + cpu[-1]), 1),
                     "recall_at_1": r1, "recall_at_10": r10,
                     "exact_over_search": round(exact_s / search_s, 1),
                     "exact_over_build_and_search": round(exact_s / (build_s + search_s), 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def ann_data(name: str, labeled: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if name == "fmnist":
        base, q = fmnist_pca()
        return base[:labeled], q[:queries]
    x = low_rank(labeled + queries, seed=seed) if name == "mixture" else isotropic(labeled + queries, 64, seed)
    return x[:labeled], x[labeled:]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["exact", "ann"], choices=["exact", "ann"])
    ap.add_argument("--queries", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dims", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--labeled", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3, help="exact part: runs of each method per size (2 at 1M)")
    ap.add_argument("--ann-data", nargs="+", default=["mixture", "fmnist", "isotropic"],
                    choices=["mixture", "fmnist", "isotropic"])
    ap.add_argument("--ann-labeled", type=int, default=None, help="labeled rows (default 100k; fmnist: all 150k)")
    ap.add_argument("--ann-queries", type=int, default=100_000, help="pool rows (fmnist: at most 60k)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for faiss, BLAS and scikit-learn's OpenMP (default: each library's own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="knn")
    args = ap.parse_args(argv)
    if args.threads:
        import faiss
        import sklearn.neighbors  # noqa: F401 - its OpenMP and BLAS are loaded before the limit is set
        from threadpoolctl import threadpool_limits

        faiss.omp_set_num_threads(args.threads)
        threadpool_limits(args.threads)
    env = environment("cpu")
    previous = out_dir() / f"{args.name}.json"
    result: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    result = {k: v for k, v in result.items() if k in ("exact", "ann", "runs", "sklearn_choice")}
    result.update(env)
    result["threads"] = args.threads
    result.setdefault("runs", {}).update({p: {"command": env["command"], "started": env["started"],
                                              "load_average": env["load_average"]} for p in args.parts})
    if "exact" in args.parts:
        result["exact"], result["sklearn_choice"] = [], {}
        for dim in args.dims:
            x = isotropic(10_000 + args.labeled, dim, args.seed + 1)
            alg, secs = sklearn_best(x[:10_000], x[10_000:], 10)
            result["sklearn_choice"][str(dim)] = {"chosen": alg, "seconds_on_10k": secs}
            for n in args.queries:
                reps = min(args.repeats, 2) if n >= 1_000_000 else args.repeats
                result["exact"].append(exact_row(n, args.labeled, dim, reps, 10, args.seed, alg))
                write_json(args.name, result)
                print(json.dumps(result["exact"][-1]), flush=True)
        result["runs"]["exact"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if "ann" in args.parts:
        result["ann"] = []
        for name in args.ann_data:
            labeled = args.ann_labeled or (150_000 if name == "fmnist" else 100_000)
            base, q = ann_data(name, labeled, args.ann_queries, args.seed)
            result["ann"] += ann_rows(name, base, q, 10)
            write_json(args.name, result)
        result["runs"]["ann"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    path = write_json(args.name, result)
    for title, headers, rows in knn_tables(result):
        print(f"\n{title}\n{table(headers, rows)}")
    print(f"wrote {path}")


def knn_tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """``(title, headers, rows)`` of each part present in a ``bench_knn.py`` result."""
    def load(part: str) -> str:
        run = result.get("runs", {}).get(part, {})
        return f"load average {run.get('load_average')} at start, {run.get('load_average_end')} at the end"

    out = []
    if result.get("exact"):
        choice = ", ".join(f"{d}-d: {c['chosen']} ({', '.join(f'{a} {s} s' for a, s in c['seconds_on_10k'].items())}"
                           " on 10k queries)" for d, c in result.get("sklearn_choice", {}).items())
        threads = result.get("threads") or "each library's default"
        out.append((f"Exact kNN, k=10, unit rows of a 10-class mixture, 4k labeled, threads: {threads}; wall seconds "
                    f"min / median over the repeats, alternating, and median CPU seconds ({load('exact')}). "
                    f"scikit-learn's fastest exact algorithm: {choice}",
                    ["queries", "dim", "labeltool s", "sklearn s", "faiss flat s", "sklearn / labeltool (wall)",
                     "CPU s labeltool / sklearn / faiss", "sklearn / labeltool (CPU)", "same neighbours as sklearn",
                     "repeats"],
                    [[f"{r['queries']:,}", r["dim"], f"{r['labeltool_min_s']} / {r['labeltool_median_s']}",
                      f"{r['sklearn_min_s']} / {r['sklearn_median_s']}",
                      f"{r['faiss_flat_min_s']} / {r['faiss_flat_median_s']}",
                      f"{r['sklearn_over_labeltool_min']}× / {r['sklearn_over_labeltool_median']}×",
                      f"{r['labeltool_cpu_median_s']} / {r['sklearn_cpu_median_s']} / {r['faiss_flat_cpu_median_s']}",
                      f"{r['sklearn_over_labeltool_cpu']}×", r["same_neighbours"], len(r["seconds"]["labeltool"])]
                     for r in result["exact"]]))
    if result.get("ann"):
        threads = result.get("threads") or "each library's default"
        out.append((f"Approximate index against exact search, k=10, threads: {threads}; seconds wall (CPU); search "
                    f"includes the calibration on 1000 queries ({load('ann')})",
                    ["data", "labeled", "queries", "asked", "kind", "breadth", "exact s", "build s", "search s",
                     "recall@1", "recall@10", "exact / search", "exact / (build + search)"],
                    [[r["data"], f"{r['labeled']:,}", f"{r['queries']:,}", r["asked"], r["kind"]
                      + (" → exact" if r["calibration"].get("exact_instead") else ""),
                      ", ".join(f"{k} {v}" for k, v in r["calibration"].items() if k in ("nprobe", "efSearch")),
                      f"{r['exact_s']} ({r.get('exact_cpu_s')})", f"{r['build_s']} ({r.get('build_cpu_s')})",
                      f"{r['search_s']} ({r.get('search_cpu_s')})", r["recall_at_1"], r["recall_at_10"],
                      f"{r['exact_over_search']}× ({r.get('exact_over_search_cpu')}×)",
                      f"{r['exact_over_build_and_search']}× ({r.get('exact_over_build_and_search_cpu')}×)"]
                     for r in result["ann"]]))
    return out


if __name__ == "__main__":
    main()

"""The Explore view's 2-D layout at 10k-100k points: plain UMAP against labeltool's sampled,
placed and warm-started one (``labeltool.ui.projection.umap_2d``), time and quality.

    python benchmarks/bench_projection.py                          # everything (an hour on a busy 2-core CPU)
    python benchmarks/bench_projection.py --parts layout --sizes 10000 --plain-sizes 10000
    python benchmarks/bench_projection.py --sizes 3000 --sample-sizes 1000 --plain-sizes 3000 \\
        --compile-points 1500 --app-points 3000 --name projection_smoke                  # smoke

Data: ``N`` synthetic 64-d embeddings, unit length, 10 classes of 4 sub-clusters each spread over
a 4-d subspace plus isotropic noise (10-NN class agreement about 0.94 in 64-d, as a trained head
gives). "Round 2" pulls every point 20% towards its class mean (the next round's tighter
embedding) and adds the last 5% of the points; round 1 is the other 95% before the pull.

Parts (each timed in wall and CPU seconds, the load average recorded at its start):

- ``layout``: on round 2's ``N`` points, alternating within each repeat: labeltool's layout for
  each ``--sample-sizes`` (a fit from scratch), the same started from round 1's layout (the
  app's second round), then once each: plain UMAP (umap-learn's defaults, what the app ran
  before) and the sample fitted by umap-learn with the rest placed by its ``transform``. The
  process compiles everything on a small warm-up first, so no row pays numba's compilation.
  Quality on 2000 random points: "kNN kept", the share of each one's 10 nearest neighbours in
  64-d among its 10 nearest in 2-D (all ``N`` points searched); trustworthiness (scikit-learn,
  among the 2000); "class agreement", the share of its 10 nearest 2-D neighbours of its class.
  "shift": after the best rotation, reflection, scale and translation onto round 1's layout,
  the median distance of round 2's points from their round-1 positions over the layout's RMS
  radius (how far the picture moves between rounds).
- ``compile``: numba's compilation in new processes sharing a fresh ``NUMBA_CACHE_DIR``: import,
  first and second call, for umap-learn as it comes and for labeltool's layout.
- ``app``: the app's path after each round, as ``labeltool.ui.figures.projection`` takes it: the
  background job (one thread, nice 10) in the process the app keeps ready, against a new process
  per job, alternating; seconds from the job's start until its layout is on disk and the job's
  CPU seconds, round 1 (from scratch, ``--app-points`` x 95%) then round 2 (``--app-points``,
  started from round 1's layout). ``--app-gap`` seconds stand in for each round before its job.

Writes benchmarks/results/<name>.json (default ``projection``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import environment, table, write_json

CLASSES, SUBCLUSTERS, DIM, INTRINSIC = 10, 4, 64, 4


# ---------------------------------------------------------------------------- data and quality
def clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``x [n, 64]`` unit-length float32 embeddings and their classes ``y [n]``."""
    rng = np.random.default_rng(seed)
    centres = 0.1 * rng.standard_normal((CLASSES, DIM))
    sub = centres[:, None, :] + 0.1 * rng.standard_normal((CLASSES, SUBCLUSTERS, DIM))
    basis = np.linalg.qr(rng.standard_normal((CLASSES, SUBCLUSTERS, DIM, INTRINSIC)))[0]  # [C, S, D, I]
    y = rng.integers(0, CLASSES, n)
    s = rng.integers(0, SUBCLUSTERS, n)
    z = rng.standard_normal((n, INTRINSIC))
    x = sub[y, s] + np.einsum("ndi,ni->nd", basis[y, s], z) + 0.3 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def next_round(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """The next round's embedding ``[n, 64]``: every point 20% closer to its class mean."""
    means = np.stack([x[y == c].mean(axis=0) for c in range(CLASSES)])
    x2 = 0.8 * x + 0.2 * means[y] + 0.02 * np.random.default_rng(seed + 1).standard_normal(x.shape)
    return (x2 / np.linalg.norm(x2, axis=1, keepdims=True)).astype(np.float32)


def quality(x: np.ndarray, y: np.ndarray, xy: np.ndarray, m: int = 2000, k: int = 10) -> dict[str, float]:
    """kNN kept, trustworthiness and class agreement of the layout ``xy [N, 2]`` of ``x [N, D]``."""
    from sklearn.manifold import trustworthiness

    from labeltool.ui.projection import nearest

    q = np.random.default_rng(12345).choice(len(x), min(m, len(x)), replace=False)
    _, high = nearest(x, x[q], k + 1)
    _, low = nearest(xy, xy[q], k + 1)
    high, low = high[:, 1:], low[:, 1:]  # the point itself first
    kept = np.mean([len(set(a) & set(b)) / k for a, b in zip(high.tolist(), low.tolist(), strict=True)])
    return {"knn_kept": round(float(kept), 3), "trust": round(float(trustworthiness(x[q], xy[q], n_neighbors=k)), 3),
            "agree_2d": round(float(np.mean(y[low] == y[q, None])), 3),
            "agree_64d": round(float(np.mean(y[high] == y[q, None])), 3)}


def shift(before: np.ndarray, after: np.ndarray) -> float:
    """Median distance of ``after [M, 2]``, aligned to ``before [M, 2]`` (rotation, reflection,
    scale, translation), from ``before``, over ``before``'s RMS radius."""
    a, b = before - before.mean(axis=0), after - after.mean(axis=0)
    u, sv, vt = np.linalg.svd(b.T @ a)
    aligned = (sv.sum() / (b ** 2).sum()) * b @ (u @ vt)
    return round(float(np.median(np.linalg.norm(aligned - a, axis=1)) / np.sqrt((a ** 2).sum(axis=1).mean())), 3)


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    """``fn()``, its wall and CPU seconds."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - t, 2), round(time.process_time() - c, 2)


# ---------------------------------------------------------------------------- the layouts
def plain_umap(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """umap-learn's own UMAP of every point (its defaults, one thread): the app's layout before."""
    import umap

    return np.asarray(umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=seed, n_jobs=1).fit_transform(x))


def umap_transform(x: np.ndarray, rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """umap-learn fitted on ``x[rows]``, the other points placed by its ``transform``."""
    import umap

    reducer = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=seed, n_jobs=1).fit(x[rows])
    out = np.empty((len(x), 2), dtype=np.float32)
    rest = np.setdiff1d(np.arange(len(x)), rows)
    out[rows], out[rest] = reducer.embedding_, reducer.transform(x[rest])
    return out


def rounds(n: int, seed: int) -> dict[str, Any]:
    """Round 1 (``ids1``, ``x1``: the first 95%) and round 2 (``ids``, ``x2``: all ``n``), with ``y``."""
    x, y = clustered(n, seed)
    n1 = int(round(0.95 * n))
    return {"ids": np.arange(1, n + 1), "x2": next_round(x, y, seed), "y": y, "ids1": np.arange(1, n1 + 1), "x1": x[:n1]}


def warm_up(seed: int) -> float:
    """Compile what the rows use (umap-learn from 4096 points searches with NN-descent); returns seconds."""
    from labeltool.ui.projection import umap_2d

    t = time.perf_counter()
    d = rounds(6000, seed)
    xy = umap_2d(d["x1"], ids=d["ids1"], sample_size=2000)
    umap_2d(d["x2"], ids=d["ids"], init=aligned(d["ids1"], xy, d["ids"]), sample_size=2000)
    umap_transform(d["x2"], np.arange(4200), seed)
    return round(time.perf_counter() - t, 1)


def aligned(old_ids: np.ndarray, old_xy: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``old_xy`` rows for ``ids`` (both id lists ascending), NaN where ``old_ids`` lacks one."""
    out = np.full((len(ids), 2), np.nan, dtype=np.float32)
    pos = np.searchsorted(old_ids, ids)
    hit = (pos < len(old_ids)) & (old_ids[np.minimum(pos, len(old_ids) - 1)] == ids)
    out[hit] = old_xy[pos[hit]]
    return out


def layout_rows(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every method's rows at ``n`` points (repeats alternate the sampled methods)."""
    from labeltool.ui.projection import SAMPLE_SIZE, sample_rows, umap_2d

    d = rounds(n, args.seed)
    x2, y, ids, n1 = d["x2"], d["y"], d["ids"], len(d["ids1"])
    load = [round(v, 2) for v in os.getloadavg()]
    first = umap_2d(d["x1"], ids=d["ids1"], seed=args.seed)  # round 1 as the app laid it out
    init = aligned(d["ids1"], first, ids)
    rows: list[dict[str, Any]] = []

    def add(method: str, sample: int, fn: Callable[[], np.ndarray], rep: int) -> None:
        xy, wall, cpu = timed(fn)
        rows.append({"points": n, "method": method, "sample": min(sample, n), "repeat": rep, "wall_s": wall, "cpu_s": cpu,
                     "load_average": load, **quality(x2, y, xy), "shift": shift(first[:n1], xy[:n1])})
        print(json.dumps(rows[-1]), flush=True)

    for rep in range(args.repeats):
        for s in args.sample_sizes:
            add("sampled", s, lambda s=s: umap_2d(x2, ids=ids, seed=args.seed, sample_size=s), rep)
        add("sampled, warm start", SAMPLE_SIZE, lambda: umap_2d(x2, ids=ids, seed=args.seed, init=init), rep)
    if n > SAMPLE_SIZE:
        add("sample + umap transform", SAMPLE_SIZE,
            lambda: umap_transform(x2, sample_rows(ids, SAMPLE_SIZE), args.seed), 0)
    if n in args.plain_sizes:
        add("plain UMAP", n, lambda: plain_umap(x2, args.seed), 0)
    return rows


# ---------------------------------------------------------------------------- new processes
def compile_child(variant: str, n: int, seed: int) -> dict[str, Any]:
    """In this (new) process: import, first and second layout of ``n`` points, in seconds."""
    x = clustered(n, seed)[0]
    t = time.perf_counter()
    import umap  # noqa: F401

    from labeltool.ui.projection import umap_2d

    imported = time.perf_counter() - t
    fn: Callable[[], Any] = (lambda: plain_umap(x, seed)) if variant == "umap" else (
        lambda: umap_2d(x, ids=np.arange(n), seed=seed))
    _, first, _ = timed(fn)
    _, second, _ = timed(fn)
    return {"import_s": round(imported, 1), "first_s": first, "second_s": second}


def compile_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Two new processes per variant, each variant with its own fresh numba cache folder."""
    rows = []
    for variant in ("umap", "labeltool"):
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            for proc in (1, 2):
                load = [round(v, 2) for v in os.getloadavg()]
                out = subprocess.run(
                    [sys.executable, __file__, "--compile-child", variant, "--compile-points", str(args.compile_points),
                     "--seed", str(args.seed)], capture_output=True, text=True, check=False,
                    env={**os.environ, "NUMBA_CACHE_DIR": cache})
                if out.returncode != 0:
                    raise RuntimeError(f"compile child {variant} failed:\n{out.stderr[-3000:]}")
                rows.append({"variant": variant, "process": proc, "points": args.compile_points, "load_average": load,
                             **json.loads(out.stdout.strip().splitlines()[-1])})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one_job(jobs: Any, cache: Path, rnd: int, ids: np.ndarray, x: np.ndarray, seed: int) -> tuple[float, float]:
    """Start round ``rnd``'s layout as ``projection()`` does; seconds until it is on disk, and
    the job's CPU seconds (a ready process's preparation not counted)."""
    from labeltool.ui.projection_jobs import load_projection, previous_layout, projection_path

    path = projection_path(cache, f"round-{rnd}", "umap")
    t = time.perf_counter()
    jobs.start(path, ids, x, seed, init=previous_layout(cache, f"round-{rnd}", ids))
    proc = jobs.running[path]
    first = last = _cpu_s(proc.pid) or 0.0
    while proc.is_alive():
        last = _cpu_s(proc.pid) or last
        time.sleep(0.05)
    ready = time.perf_counter() - t
    if load_projection(path, ids) is None:
        raise RuntimeError(f"round {rnd}: no layout ({jobs.status(path)})")
    return round(ready, 2), round(last - first, 2)


def app_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Seconds from the end of a round until its layout is on disk, rounds 1 and 2, with the
    app's ready process and with a new process per job (alternating)."""
    from labeltool.ui.projection_jobs import UMAP_JOBS, _Jobs

    d = rounds(args.app_points, args.seed)
    with tempfile.TemporaryDirectory(prefix="projection-app-") as tmp:  # as the Explore page before round 1
        _one_job(UMAP_JOBS, Path(tmp), 0, d["ids1"][:300], d["x1"][:300], args.seed)
    variants = [("ready process", UMAP_JOBS), ("new process", _Jobs())]
    rows = []
    for rep in range(args.app_repeats):
        for name, jobs in variants if rep % 2 == 0 else variants[::-1]:
            with tempfile.TemporaryDirectory(prefix="projection-app-") as tmp:
                for rnd, ids, x in ((1, d["ids1"], d["x1"]), (2, d["ids"], d["x2"])):
                    time.sleep(args.app_gap)  # the round itself, while the ready process gets ready
                    load = [round(v, 2) for v in os.getloadavg()]
                    ready, cpu = _one_job(jobs, Path(tmp), rnd, ids, x, args.seed)
                    rows.append({"points": len(ids), "round": rnd, "process": name, "repeat": rep,
                                 "start": "previous layout" if rnd == 2 else "scratch", "ready_s": ready,
                                 "job_cpu_s": cpu, "load_average": load})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------------------- tables
def _stat(rows: list[dict[str, Any]], key: str) -> str:
    v = sorted(r[key] for r in rows)
    return f"{v[0]:.1f}" if len(v) == 1 else f"{v[0]:.1f} / {float(np.median(v)):.1f}"


COMPILE_NAMES = {"umap": "umap-learn as it comes", "labeltool": "labeltool (exact neighbours, numba cache on)"}


def projection_tables(d: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """``(title, headers, rows)`` of each part of a projection result."""
    out = []
    if d.get("layout"):
        groups: dict[tuple[int, str, int], list[dict[str, Any]]] = {}
        for r in d["layout"]:
            groups.setdefault((r["points"], r["method"], r["sample"]), []).append(r)
        plain = {k[0]: g[0]["cpu_s"] for k, g in groups.items() if k[1] == "plain UMAP"}
        rows = []
        for (n, method, sample), g in groups.items():
            cpu = min(r["cpu_s"] for r in g)
            rows.append([n, method, sample, len(g), _stat(g, "wall_s"), _stat(g, "cpu_s"),
                         f"{plain[n] / cpu:.0f}×" if n in plain and method != "plain UMAP" else "-",
                         g[0]["knn_kept"], g[0]["trust"], g[0]["agree_2d"], g[0]["agree_64d"], g[0]["shift"],
                         g[0]["load_average"][0]])
        out.append(("Layout of round 2's points (wall and CPU seconds: min / median over repeats)",
                    ["points", "method", "fitted", "repeats", "wall s", "CPU s", "plain CPU / CPU", "kNN kept",
                     "trustworthiness", "class agreement 2-D", "class agreement 64-d", "shift from round 1",
                     "load"], rows))
    if d.get("compile"):
        out.append(("numba compilation in new processes sharing a fresh cache folder (seconds)",
                    ["layout", "process", "points", "import", "first call", "second call", "load"],
                    [[COMPILE_NAMES.get(r["variant"], r["variant"]), r["process"], r["points"], r["import_s"],
                      r["first_s"], r["second_s"], r["load_average"][0]] for r in d["compile"]]))
    if d.get("app"):
        groups2: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
        for r in d["app"]:
            groups2.setdefault((r["round"], r["points"], r["process"]), []).append(r)
        out.append(("The app's background job: seconds from the end of a round until its layout is ready "
                    "(PCA shown meanwhile; min / median)",
                    ["round", "points", "starts from", "job runs in", "repeats", "ready s", "job CPU s", "load"],
                    [[rnd, n, g[0]["start"], proc, len(g), _stat(g, "ready_s"), _stat(g, "job_cpu_s"),
                      g[0]["load_average"][0]] for (rnd, n, proc), g in sorted(groups2.items())]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=["compile", "layout", "app"], choices=["compile", "layout", "app"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 50_000, 100_000])
    ap.add_argument("--plain-sizes", nargs="*", type=int, default=[10_000, 50_000, 100_000],
                    help="sizes at which plain UMAP runs too (minutes at 100k)")
    ap.add_argument("--sample-sizes", nargs="+", type=int, default=[2000, 3000, 5000, 10_000])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile-points", type=int, default=6000, help="above 4096: umap-learn searches with NN-descent")
    ap.add_argument("--app-points", type=int, default=100_000)
    ap.add_argument("--app-repeats", type=int, default=3)
    ap.add_argument("--app-gap", type=float, default=10.0, help="seconds standing in for the round before each job")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="projection")
    ap.add_argument("--compile-child", choices=["umap", "labeltool"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # as the app's job runs: one thread (before numba loads)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.compile_child:
        print(json.dumps(compile_child(args.compile_child, args.compile_points, args.seed)))
        return
    result: dict[str, Any] = {**environment("cpu"), "args": {k: str(v) for k, v in vars(args).items()}}
    if "compile" in args.parts:
        result["compile"] = compile_rows(args)
        write_json(args.name, result)
    if "layout" in args.parts:
        result["warm_up_s"] = warm_up(args.seed)
        result["layout"] = []
        for n in args.sizes:
            result["layout"] += layout_rows(n, args)
            write_json(args.name, result)
    if "app" in args.parts:
        result["app"] = app_rows(args)
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    path = write_json(args.name, result)
    for title, headers, rows in projection_tables(result):
        print(f"\n{title}\n{table(headers, rows)}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmark scripts: environment record, JSON output, tables, memory,
and a small priority-ordered process pool that keeps finished results when time runs out."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def out_dir() -> Path:
    """Folder for result files: ``$BENCH_OUT`` or ``benchmarks/results``."""
    path = Path(os.environ.get("BENCH_OUT", REPO / "benchmarks" / "results"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_cache_dir() -> Path:
    """Where decoded datasets and extracted features are cached between runs."""
    base = os.environ.get("LABELTOOL_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "labeltool-bench"
    )
    return Path(base)


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "?"))


def environment(device: str | None = None) -> dict[str, Any]:
    """Machine, device, library versions, load and the command line of this run."""
    import numpy as np
    import torch

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") and torch.cuda.is_available() else None
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": platform.machine(),
        "node": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "device": dev,
        "device_name": name or _cpu_model(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "faiss": _version("faiss"),
        "sklearn": _version("sklearn"),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``<out_dir>/<name>.json`` atomically; returns the path."""
    path = out_dir() / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable))
    tmp.replace(path)
    return path


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table (columns right-aligned except the first)."""
    cells = [[_fmt(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    out = []
    for r in [list(headers), ["-" * w for w in widths], *cells]:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))))
    return "\n".join(out)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The same table in Markdown."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB): ``VmHWM``, which starts afresh at
    exec (``ru_maxrss`` would carry over the peak of the parent a subprocess was forked from)."""
    hwm = proc_status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def proc_status_mb(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in MiB, or None where there is none (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class AnonRssSampler:
    """Samples ``RssAnon`` (heap, not file-backed memmap pages) in a thread; ``peak_mb`` after stop."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float:
        return proc_status_mb("RssAnon") or 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._read())
            time.sleep(self.interval)

    def __enter__(self) -> AnonRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._read())


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads (``None`` leaves torch's default). On a CPU shared with other
    processes, 1 thread can be several times faster than 2 (OpenMP threads wait on each other)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _init_worker(threads: int) -> None:
    set_threads(max(1, threads))


def run_tasks(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    tasks: Sequence[dict[str, Any]],
    *,
    jobs: int,
    on_done: Callable[[dict[str, Any]], None],
    time_budget: float | None = None,
    partial: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``fn(task)`` for each task in order (``jobs`` processes; 1 = in this process).

    ``on_done(result)`` is called as each finishes, so results can be written as they come.
    With ``time_budget`` seconds, tasks still running or waiting then are abandoned (the pool
    is terminated) and returned as ``{"task": ..., "status": "not finished"}`` rows, or as
    ``partial(task)`` where that returns a record of the work done so far.
    """
    deadline = None if time_budget is None else time.monotonic() + time_budget
    if jobs <= 1:
        left: list[dict[str, Any]] = []
        for t in tasks:
            if deadline is not None and time.monotonic() > deadline:
                left.append({"task": t, "status": "not finished (time budget)"})
                continue
            try:
                result = fn(t)
            except Exception as e:  # noqa: BLE001 - one failed task must not lose the others
                result = {"task": t, "status": f"failed: {type(e).__name__}: {e}"}
            on_done(result)
        return left
    threads = max(1, (os.cpu_count() or 1) // jobs)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(jobs, initializer=_init_worker, initargs=(threads,))
    pending = {i: pool.apply_async(fn, (t,)) for i, t in enumerate(tasks)}
    try:
        while pending:
            if deadline is not None and time.monotonic() > deadline:
                break
            for i in [i for i, r in pending.items() if r.ready()]:
                res = pending.pop(i)
                try:
                    on_done(res.get())
                except Exception as e:  # noqa: BLE001 - one failed task must not lose the others
                    on_done({"task": tasks[i], "status": f"failed: {type(e).__name__}: {e}"})
            time.sleep(0.2)
    finally:
        pool.terminate()
        pool.join()
    return [(partial(tasks[i]) if partial else None) or {"task": tasks[i], "status": "not finished (time budget)"}
            for i in sorted(pending)]

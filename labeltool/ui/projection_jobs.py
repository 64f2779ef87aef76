"""Cached 2-D layouts on disk and the background processes that compute them.

A layout is computed in its own process (spawned, one thread, ``nice`` 10) so a training round
never competes with it for the interpreter, and :meth:`_Jobs.cancel_all` stops it when the next
round starts. Importing umap and loading its compiled functions takes a new process seconds, so
the app's jobs keep one process ready for the next job (:func:`_standby`): started when a job
ends on its own, it does that while the user reviews, then sits idle (no CPU) until the next
round ends and hands it a layout.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_ends
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np

from labeltool.ui.projection import prepare_umap, umap_2d

Compute = Callable[..., np.ndarray]


# ---------------------------------------------------------------------------- cache files
def projection_path(cache_dir: Path, key: str, method: str) -> Path:
    """Where the projection ``method`` of the embedding ``key`` is cached."""
    return Path(cache_dir) / "projections" / f"{key}-{method}.npz"


def save_projection(path: Path, ids: np.ndarray, xy: np.ndarray) -> None:
    """Write atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as fh:
        np.savez(fh, ids=np.asarray(ids, dtype=np.int64), xy=np.asarray(xy, dtype=np.float32))
    os.replace(tmp, path)


def load_projection(path: Path, ids: np.ndarray) -> np.ndarray | None:
    """Cached coordinates for exactly ``ids`` (same order), or None when missing or stale."""
    try:
        with np.load(path) as data:
            cached_ids, xy = data["ids"], data["xy"]
    except (OSError, KeyError, ValueError):
        return None
    if cached_ids.shape != np.shape(ids) or not np.array_equal(cached_ids, ids):
        return None
    return xy


def previous_layout(cache_dir: Path, key: str, ids: np.ndarray) -> np.ndarray | None:
    """The newest cached UMAP of another embedding, aligned to ``ids [N]``: ``[N, 2]`` with NaN
    rows for the images it does not have; None when there is none or it shares no image."""
    own = projection_path(cache_dir, key, "umap")
    others = [p for p in own.parent.glob("*-umap.npz") if p != own] if own.parent.is_dir() else []
    if not others:
        return None
    try:
        with np.load(max(others, key=lambda p: p.stat().st_mtime)) as data:
            old_ids, old_xy = data["ids"], data["xy"]
    except (OSError, KeyError, ValueError):
        return None
    if len(old_ids) == 0:
        return None
    order = np.argsort(old_ids)
    pos = np.minimum(np.searchsorted(old_ids[order], ids), len(old_ids) - 1)
    hit = old_ids[order][pos] == ids
    if not hit.any():
        return None
    out = np.full((len(ids), 2), np.nan, dtype=np.float32)
    out[hit] = old_xy[order][pos[hit]]
    return out


def _error_path(path: Path) -> Path:
    return path.with_name(path.name + ".error.txt")


def _input_path(path: Path) -> Path:
    return path.with_name(path.name + ".input.npz")


# ---------------------------------------------------------------------------- job processes
def _lower_priority(nice: int) -> None:
    """One thread (set before numba or BLAS load) and ``nice`` more niceness for this process."""
    os.environ["NUMBA_NUM_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    with contextlib.suppress(OSError, AttributeError):
        os.nice(nice)


def _run_job(path: str, seed: int, compute: Compute) -> None:
    """``compute(x, seed=, ids=, init=)`` ``[N, 2]`` (or its error) to disk. The input ``ids``,
    ``x`` and ``init`` (the previous layout, ``[0, 2]`` for none) wait in :func:`_input_path`:
    handed over through the process's pipe, a large array would hold the parent until the child
    had imported everything and started reading (seconds, in the middle of the app's round)."""
    source = _input_path(Path(path))
    try:
        with np.load(source) as data:
            ids, x = data["ids"], data["x"]
            init = data["init"] if len(data["init"]) else None
        save_projection(Path(path), ids, compute(x, seed=seed, ids=ids, init=init))
    except Exception as e:  # noqa: BLE001 - reported through status(), the view falls back to PCA
        _error_path(Path(path)).write_text(f"failed: {e}", encoding="utf-8")
    finally:
        source.unlink(missing_ok=True)


def _projection_job(path: str, seed: int, nice: int, compute: Compute) -> None:
    """Body of a background projection process started for its job."""
    _lower_priority(nice)
    _run_job(path, seed, compute)


def _standby(conn: Connection, nice: int, prepare: Callable[[], object]) -> None:
    """Body of a projection process started ahead of its job: ``prepare()`` (imports, compiled
    code), then wait for ``(path, seed, compute)`` on ``conn`` and run that one job."""
    _lower_priority(nice)
    with contextlib.suppress(Exception):  # whatever failed here fails again, reported, in the job
        prepare()
    try:
        path, seed, compute = conn.recv()
    except (EOFError, OSError):  # the app went away
        return
    _run_job(path, seed, compute)


class _Jobs:
    """Background layouts, one per cache file; with ``prepare``, one process kept ready ahead.

    Each job runs in its own process, and :meth:`cancel_all` stops them when a round starts: the
    projection of the previous round is stale by then anyway. The ready process is started when
    a job ends on its own (not beside it, nor during the round that stopped it), and takes the
    next job.
    """

    def __init__(self, nice: int = 10, compute: Compute = umap_2d,
                 prepare: Callable[[], object] | None = None) -> None:
        self.lock = threading.Lock()
        self.running: dict[Path, BaseProcess] = {}
        self.nice, self.compute, self.prepare = nice, compute, prepare
        self.standby: tuple[BaseProcess, Connection] | None = None
        self.generation = 0  # counts cancel_all calls: a job stopped by one starts no ready process

    def status(self, path: Path) -> str | None:
        """``"running"``, an error text, or None (never started, cancelled, or done)."""
        with self.lock:
            proc = self.running.get(path)
            if proc is not None and proc.is_alive():
                return "running"
        err = _error_path(path)
        return err.read_text(encoding="utf-8") if err.is_file() else None

    def start(self, path: Path, ids: np.ndarray, x: np.ndarray, seed: int, init: np.ndarray | None = None) -> bool:
        """Start the layout of ``x [N, D]`` into ``path`` (from the layout ``init [N, 2]``, NaN
        rows where it has none); False when one is already running there."""
        with self.lock:
            proc = self.running.get(path)
            if proc is not None and proc.is_alive():
                return False
            _error_path(path).unlink(missing_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(_input_path(path), "wb") as fh:
                np.savez(fh, ids=np.asarray(ids, dtype=np.int64), x=np.asarray(x, dtype=np.float32),
                         init=np.zeros((0, 2), np.float32) if init is None else np.asarray(init, dtype=np.float32))
            proc = self._hand_over(str(path), seed)
            if proc is None:
                proc = multiprocessing.get_context("spawn").Process(
                    target=_projection_job, args=(str(path), seed, self.nice, self.compute),
                    name="labeltool-umap", daemon=True)
                proc.start()
            self.running[path] = proc
            if self.prepare is not None:
                threading.Thread(target=self._ready_after, args=(proc, self.generation), daemon=True).start()
            return True

    def _hand_over(self, path: str, seed: int) -> BaseProcess | None:
        """The ready process, now running the job into ``path``; None when there is none."""
        ready, self.standby = self.standby, None
        if ready is None:
            return None
        proc, conn = ready
        try:
            if not proc.is_alive():
                return None
            conn.send((path, seed, self.compute))
            return proc
        except (OSError, ValueError):  # it ended between the check and the send
            proc.terminate()
            return None
        finally:
            conn.close()

    def _ready_after(self, proc: BaseProcess, generation: int) -> None:
        """Once ``proc``'s job has ended, unless :meth:`cancel_all` stopped it: a ready process.
        (Waits on the process's sentinel: reaping it is left to whoever joins it.)"""
        wait_for_ends([proc.sentinel])
        with self.lock:
            if generation == self.generation and self.standby is None:
                self._start_standby()

    def _start_standby(self) -> None:
        if self.prepare is None:
            return
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_standby, args=(theirs, self.nice, self.prepare), name="labeltool-umap-ready",
                           daemon=True)
        proc.start()
        theirs.close()
        self.standby = (proc, ours)

    def wait(self, path: Path, timeout: float | None = None) -> None:
        """Block until the job writing ``path`` ends (or ``timeout`` seconds pass)."""
        with self.lock:
            proc = self.running.get(path)
        if proc is not None:
            proc.join(timeout)

    def cancel_all(self) -> int:
        """Stop every running job (their files are not written; the ready process stays);
        returns how many were stopped."""
        with self.lock:
            alive = [(path, p) for path, p in self.running.items() if p.is_alive()]
            self.running.clear()
            self.generation += 1
        for _, proc in alive:
            proc.terminate()
        for path, proc in alive:
            proc.join(5)
            for tmp in path.parent.glob(path.name + ".tmp-*"):  # a write the stop cut short
                tmp.unlink(missing_ok=True)
            _input_path(path).unlink(missing_ok=True)
        return len(alive)


UMAP_JOBS = _Jobs(prepare=prepare_umap)

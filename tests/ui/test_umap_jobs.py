"""Tests for the background projection jobs of labeltool.ui.figures: a separate process, stoppable.

The jobs run stand-in projections (PCA, a sleep, an error) defined here: a real UMAP compiles
for minutes in a fresh process on a busy 2-core machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from labeltool.ui.projection import pca_2d, umap_2d
from labeltool.ui.projection_jobs import UMAP_JOBS, _Jobs, load_projection, projection_path


def pca_in_child(x: np.ndarray, seed: int, **_: object) -> np.ndarray:
    assert os.environ["NUMBA_NUM_THREADS"] == "1" and os.nice(0) >= 10  # one thread, lower priority
    return pca_2d(x)


def sleep_a_minute(x: np.ndarray, seed: int, **_: object) -> np.ndarray:
    time.sleep(60)
    return pca_2d(x)


def fail(x: np.ndarray, seed: int, **_: object) -> np.ndarray:
    raise ValueError("no layout for this data")


def test_the_app_jobs_run_umap() -> None:
    assert UMAP_JOBS.compute is umap_2d and UMAP_JOBS.nice == 10


def test_a_job_runs_in_its_own_low_priority_process_and_writes_its_projection(tmp_path: Path) -> None:
    jobs = _Jobs(compute=pca_in_child)
    rng = np.random.default_rng(0)
    ids, x = np.arange(40), rng.normal(size=(40, 6)).astype(np.float32)
    path = projection_path(tmp_path, "round-1", "umap")
    assert jobs.start(path, ids, x, seed=0)
    proc = jobs.running[path]
    assert proc.pid != os.getpid() and proc.name == "labeltool-umap"
    jobs.wait(path, timeout=120)
    assert proc.exitcode == 0 and jobs.status(path) is None
    xy = load_projection(path, ids)
    assert xy is not None and np.allclose(xy, pca_2d(x))
    assert not list(tmp_path.rglob("*.input.npz"))  # the child took its input from a file and removed it


def test_cancel_all_stops_running_jobs_and_leaves_no_file(tmp_path: Path) -> None:
    jobs = _Jobs(compute=sleep_a_minute)
    path = projection_path(tmp_path, "round-2", "umap")
    assert jobs.start(path, np.arange(10), np.zeros((10, 3), np.float32), seed=0)
    assert not jobs.start(path, np.arange(10), np.zeros((10, 3), np.float32), seed=0)  # one job per file
    assert jobs.status(path) == "running"
    t = time.perf_counter()
    assert jobs.cancel_all() == 1
    assert time.perf_counter() - t < 10
    assert jobs.status(path) is None and not path.exists() and not list(tmp_path.rglob("*.tmp-*"))
    assert not list(tmp_path.rglob("*.input.npz"))
    assert jobs.cancel_all() == 0


def test_a_failed_job_reports_its_error_and_a_new_start_clears_it(tmp_path: Path) -> None:
    jobs = _Jobs(compute=fail)
    path = projection_path(tmp_path, "round-3", "umap")
    assert jobs.start(path, np.arange(8), np.zeros((8, 2), np.float32), seed=0)
    jobs.wait(path, timeout=120)
    assert jobs.status(path) == "failed: no layout for this data"
    jobs.compute = sleep_a_minute
    assert jobs.start(path, np.arange(8), np.zeros((8, 2), np.float32), seed=0)
    assert jobs.status(path) == "running"
    jobs.cancel_all()

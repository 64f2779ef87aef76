"""Tests for the Explore view's layout (labeltool.ui.projection), the previous layout it starts
from and the process kept ready for it (labeltool.ui.projection_jobs).

Real UMAP runs on a few hundred points only; the job processes run stand-ins defined here."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from labeltool.ui.projection import place, sample_rows, umap_2d, warm_start
from labeltool.ui.projection_jobs import (
    _Jobs,
    load_projection,
    previous_layout,
    projection_path,
    save_projection,
)


def two_clusters(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x [n, 8]``: two tight blobs far apart; ``y [n]`` which blob."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(scale=0.3, size=(n, 8)) + np.where(y[:, None] == 1, 4.0, -4.0)
    return x.astype(np.float32), y


def nn_same(xy: np.ndarray, y: np.ndarray) -> float:
    """Share of the points whose nearest other point in 2-D has their label."""
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(y[d.argmin(axis=1)] == y))


# ---------------------------------------------------------------------------- pure parts
def test_the_sample_keeps_its_images_as_the_pool_grows() -> None:
    small = sample_rows(np.arange(1, 1001), 100)
    assert len(small) == 100 and np.all(np.diff(small) > 0)
    grown = sample_rows(np.arange(1, 1201), 100)
    old_ids_kept = set((grown + 1)[grown < 1000].tolist())
    assert old_ids_kept <= set((small + 1).tolist())  # an old image leaves only for a new one
    assert len(old_ids_kept) >= 80
    assert not np.array_equal(small, np.arange(100))  # a spread over the ids, not the first rows
    assert np.array_equal(sample_rows(np.arange(50), 100), np.arange(50))


def test_a_point_goes_with_most_of_its_neighbours_not_between_two_clusters() -> None:
    base = np.array([[0, 0], [0.2, 0], [0, 0.2], [0.2, 0.2], [0.1, 0.1], [0.1, 0],
                     [10, 0], [10.2, 0], [10, 0.2], [10.1, 0.1]], dtype=np.float32)
    idx = np.arange(10)[None, :]
    dist = np.array([[1, 1, 1, 1, 1, 1, 0.9, 0.9, 0.9, 0.9]], dtype=np.float32)  # the far cluster a bit nearer
    xy = place(base, dist, idx)
    assert xy.shape == (1, 2) and xy[0, 0] < 0.3  # a plain mean would land near x = 4
    same = place(np.full((4, 2), 3.0, np.float32), np.array([[0.1, 1, 2, 3]], np.float32), np.arange(4)[None])
    assert np.allclose(same, 3.0)
    near = place(np.array([[0, 0], [1, 0]], np.float32), np.array([[0.1, 1.0]], np.float32), np.array([[0, 1]]))
    assert 0 <= near[0, 0] < 0.5  # the nearer neighbour weighs more


def test_warm_start_fills_new_rows_and_gives_up_below_half() -> None:
    x = np.repeat(np.eye(4, dtype=np.float32) * 10, 3, axis=0)  # 4 groups of 3 identical rows
    prev = np.repeat(np.array([[0, 0], [5, 0], [0, 5], [5, 5]], np.float32), 3, axis=0)
    partial = prev.copy()
    partial[[2, 5]] = np.nan  # one new image in each of two groups
    start = warm_start(x, partial)
    assert start is not None and np.allclose(start, prev, atol=0.01)  # placed where the rest of its group is
    assert warm_start(x, None) is None
    mostly_new = np.full_like(prev, np.nan)
    mostly_new[:5] = prev[:5]
    assert warm_start(x, mostly_new) is None


def test_umap_2d_names_a_wrong_init() -> None:
    with pytest.raises(ValueError, match=r"init must be \[N, 2\] = \[10, 2\]"):
        umap_2d(np.zeros((10, 3), np.float32), init=np.zeros((9, 2), np.float32))


def test_the_previous_layout_is_the_newest_other_one_aligned_to_the_ids(tmp_path: Path) -> None:
    ids = np.array([3, 5, 7, 9])
    assert previous_layout(tmp_path, "round-3", ids) is None
    save_projection(projection_path(tmp_path, "round-1", "umap"), np.array([3, 5]), np.ones((2, 2)))
    time.sleep(0.02)
    save_projection(projection_path(tmp_path, "round-2", "umap"), np.array([9, 4, 3]),
                    np.array([[9, 9], [4, 4], [3, 3]], np.float32))
    time.sleep(0.02)
    save_projection(projection_path(tmp_path, "round-3", "umap"), ids, np.zeros((4, 2)))  # its own: not a start
    got = previous_layout(tmp_path, "round-3", ids)
    assert got is not None
    assert np.array_equal(got[[0, 3]], [[3, 3], [9, 9]]) and np.isnan(got[[1, 2]]).all()
    assert previous_layout(tmp_path, "round-4", np.array([100, 200])) is None  # shares no image


# ---------------------------------------------------------------------------- UMAP itself
def test_a_small_project_gets_umap_of_all_its_points() -> None:
    x, y = two_clusters(200)
    a = umap_2d(x, seed=3)
    assert a.shape == (200, 2) and a.dtype == np.float32
    assert np.array_equal(a, umap_2d(x, seed=3))
    assert nn_same(a, y) == 1.0


def test_beyond_the_sample_the_rest_is_placed_and_the_previous_layout_is_kept() -> None:
    x, y = two_clusters(600)
    ids = np.arange(1000, 1600)
    cold = umap_2d(x, ids=ids, sample_size=200)
    assert cold.shape == (600, 2) and np.isfinite(cold).all() and nn_same(cold, y) >= 0.95
    for side in (1.0, -1.0):  # cluster 1 drawn right, then left, in the previous round
        init = np.stack([np.where(y == 1, side * 5.0, -side * 5.0), np.zeros(600)], axis=1).astype(np.float32)
        init[::7] = np.nan  # images new this round
        warm = umap_2d(x, ids=ids, init=init, sample_size=200)
        gap = warm[y == 1, 0].mean() - warm[y == 0, 0].mean()
        assert np.sign(gap) == side and nn_same(warm, y) >= 0.95


# ---------------------------------------------------------------------------- the job processes
def echo_init(x: np.ndarray, seed: int, ids: np.ndarray, init: np.ndarray | None) -> np.ndarray:
    """The layout handed in (-1 where it had none), after checking the ids came along."""
    assert len(ids) == len(x)
    return np.full((len(x), 2), -2.0) if init is None else np.nan_to_num(init, nan=-1.0)


def pca_job(x: np.ndarray, seed: int, **_: object) -> np.ndarray:
    return np.asarray(x[:, :2], dtype=np.float32)


def get_ready() -> None:
    """Stand-in for importing umap: a moment's work."""
    time.sleep(0.2)


def test_the_app_starts_a_round_from_the_previous_rounds_layout(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from labeltool.ui import figures  # here: the job processes import this module, and need no plotly

    jobs = _Jobs(nice=0, compute=echo_init)
    monkeypatch.setattr(figures, "UMAP_JOBS", jobs)
    ids1, ids2 = np.arange(1, 9), np.arange(1, 11)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    assert figures.projection(tmp_path, "round-1", ids1, x[:8]).method == "pca"
    jobs.wait(projection_path(tmp_path, "round-1", "umap"), timeout=120)
    assert np.array_equal(figures.projection(tmp_path, "round-1", ids1, x[:8]).xy, np.full((8, 2), -2.0))
    save_projection(projection_path(tmp_path, "round-1", "umap"), ids1, np.arange(16).reshape(8, 2))
    figures.projection(tmp_path, "round-2", ids2, x)
    jobs.wait(projection_path(tmp_path, "round-2", "umap"), timeout=120)
    got = load_projection(projection_path(tmp_path, "round-2", "umap"), ids2)
    assert got is not None and np.array_equal(got[:8], np.arange(16).reshape(8, 2)) and (got[8:] == -1).all()


def _wait_for(cond: object, timeout: float = 60) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if callable(cond) and cond():
            return True
        time.sleep(0.05)
    return False


def test_the_next_job_runs_in_the_process_made_ready_after_the_last_one(tmp_path: Path) -> None:
    jobs = _Jobs(nice=0, compute=pca_job, prepare=get_ready)  # niced, a busy CPU starves the ready process
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    first = projection_path(tmp_path, "round-1", "umap")
    assert jobs.start(first, np.arange(6), x, seed=0) and jobs.standby is None  # not beside a running job
    jobs.wait(first, timeout=120)
    assert _wait_for(lambda: jobs.standby is not None)
    ready = jobs.standby[0] if jobs.standby else None
    second = projection_path(tmp_path, "round-2", "umap")
    assert jobs.start(second, np.arange(6), x, seed=0)
    assert ready is not None and jobs.running[second].pid == ready.pid and ready.pid != os.getpid()
    jobs.wait(second, timeout=120)
    xy = load_projection(second, np.arange(6))
    assert ready.exitcode == 0 and xy is not None and np.array_equal(xy, x[:, :2])
    assert not list(tmp_path.rglob("*.input.npz"))
    assert _wait_for(lambda: jobs.standby is not None)
    jobs.standby[0].terminate()  # type: ignore[index]


def test_a_stopped_job_leaves_no_ready_process_and_a_ready_one_survives_a_stop(tmp_path: Path) -> None:
    jobs = _Jobs(nice=0, compute=sleep_a_minute, prepare=get_ready)
    path = projection_path(tmp_path, "round-1", "umap")
    assert jobs.start(path, np.arange(6), np.zeros((6, 3), np.float32), seed=0)
    assert jobs.cancel_all() == 1
    time.sleep(1.0)
    assert jobs.standby is None and jobs.status(path) is None
    jobs._start_standby()
    ready = jobs.standby[0] if jobs.standby else None
    assert jobs.cancel_all() == 0 and ready is not None and ready.is_alive() and jobs.standby is not None
    ready.terminate()


def sleep_a_minute(x: np.ndarray, seed: int, **_: object) -> np.ndarray:
    time.sleep(60)
    return np.zeros((len(x), 2), np.float32)

"""SIGKILL at random moments during a batch accept, a training round, an embedding run and an
export. After every kill: ``PRAGMA integrity_check`` is ok, every acknowledged write is there,
the feature cache is complete or recomputed, no partial export sits under the target name, and
the next run resumes. ``LABELTOOL_CRASH_KILLS=N`` runs N kills per scenario (default: a few)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from crashkit import SEED, ForkServer, kills, small_sample

from labeltool.config import ProjectConfig, SuggestConfig, TrainConfig
from labeltool.data.store import Store
from labeltool.io.model_io import HEAD_WEIGHTS, MODEL_JSON, NETWORK_FILES
from labeltool.session import LabelingSession
from labeltool.train.checkpoints import latest_round, load_checkpoint

from sample_helpers import TEST_IMAGE_SIZE

pytestmark = pytest.mark.slow
FAST = TrainConfig(epochs=2, min_steps=20, max_steps=20)


def _killed(server: ForkServer, pid: int, delay: float) -> bool:
    """Sleep ``delay`` then SIGKILL ``pid``; True when the kill hit a running worker."""
    time.sleep(delay)
    status = server.kill(pid)
    assert not server.errors(pid), server.errors(pid)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _store(root: Path) -> Store:
    st = Store(root / ".labeltool" / "project.sqlite")
    assert st.integrity_ok()
    return st


def test_kill_during_batch_accept(small_project: Path, fork_server: ForkServer,
                                  reliability_stats: dict[str, Any]) -> None:
    rng = random.Random(SEED + 1)
    with LabelingSession.open(small_project) as s:
        s.train_round(FAST)
        s.propose(SuggestConfig(batch_size=None))
    accepted: dict[int, tuple[int, int]] = {}  # acknowledged decision id -> (image, class)
    undone: set[int] = set()
    n, hits = kills(6), 0
    for it in range(n):
        pid = fork_server.start("accept", root=str(small_project), batch=3, seed=SEED + it)
        fork_server.wait_for(pid, "ready")
        hits += _killed(fork_server, pid, rng.uniform(0.0, 0.6))
        for ack in fork_server.acks(pid):
            if ack["op"] == "accept":
                accepted.update(zip(ack["ids"], map(tuple, ack["rows"]), strict=True))
            else:
                undone.update(ack["undone"])
        with _store(small_project) as st:
            log = {d.id: d for d in st.decisions()}
            for did, (image, cls) in accepted.items():
                assert (log[did].action, log[did].image_id, log[did].class_id) == ("accept", image, cls)
            undo_of = {d.undoes for d in log.values() if d.action == "undo"}
            assert undone <= undo_of
            sizes = Counter(d.batch for d in log.values() if d.action == "accept")
            assert set(sizes.values()) <= {3}  # a batch is all there or not at all
            unacked = len(log) - len(accepted) - len(undo_of & undone)
            assert unacked <= 3 * (it + 1)  # at most the batch in flight at each kill
    assert hits == n and len(accepted) > 0
    with LabelingSession.open(small_project) as s:  # the next run resumes
        pending = s.pending_suggestions()
        before = len(s.label_state().labels)
        s.accept(pending[:2])
        assert len(s.label_state().labels) == before + 2
    reliability_stats["kill_batch_accept"] = {
        "kills": n, "decisions_acknowledged_and_found": len(accepted) + len(undone),
        "committed_but_unacknowledged_at_last_check": unacked,
    }


def test_kill_during_training_round(small_project: Path, fork_server: ForkServer,
                                    reliability_stats: dict[str, Any]) -> None:
    rng = random.Random(SEED + 2)
    ckpts = small_project / ".labeltool" / "checkpoints"
    rounds: set[int] = set()
    assigned: set[int] = set()
    n = kills(2)
    for _ in range(n):
        pid = fork_server.start("train", root=str(small_project), steps=20)
        fork_server.wait_for(pid, "ready")
        t0 = time.monotonic()
        fork_server.wait_for(pid, "ack")  # one round done: the kill lands anywhere in the next ones
        assert _killed(fork_server, pid, rng.uniform(0.0, 1.5 * (time.monotonic() - t0)))
        for ack in fork_server.acks(pid):
            if ack["op"] == "round":
                rounds.add(ack["round"])
            else:
                assigned.update(ack["ids"])
        with _store(small_project) as st:
            stored = {r.id: r for r in st.rounds()}
            assert all(stored[r].finished is not None and "final_loss" in stored[r].metrics for r in rounds)
            assert assigned <= {d.id for d in st.decisions()}
        latest = latest_round(ckpts)
        if latest is not None:
            load_checkpoint(ckpts, latest)  # whatever is on disk as complete really is
    with LabelingSession.open(small_project) as s:  # the next run resumes
        m = s.train_round(FAST)
        assert m["round"] > max(rounds)
        assert s.propose(SuggestConfig(batch_size=5))
        assert s.pending_suggestions()
    reliability_stats["kill_training_round"] = {"kills": n, "rounds_acknowledged_and_found": len(rounds),
                                                "decisions_acknowledged_and_found": len(assigned)}


def _reference_features(root: Path) -> dict[str, np.ndarray]:
    with LabelingSession.open(root) as s:
        hashes = [r.sha256 or "" for r in s.store.images() if r.status == "ok"]
        return dict(zip(hashes, s.feature_cache().gather(hashes), strict=True))


def test_kill_during_embedding(small_embedded: Path, tmp_path: Path, fork_server: ForkServer,
                               reliability_stats: dict[str, Any]) -> None:
    rng = random.Random(SEED + 3)
    reference = _reference_features(small_embedded)
    n, kept_rows, mid_run = kills(2), 0, 0
    for it in range(n):
        root = small_sample(tmp_path / f"run{it}", small_embedded, per_class=2, unlabeled=16)
        LabelingSession.open(root, config=ProjectConfig(image_size=TEST_IMAGE_SIZE, embed_batch_size=2)).close()
        pid = fork_server.start("embed", root=str(root))
        fork_server.wait_for(pid, "ready")
        fork_server.wait_for(pid, "ack", match=lambda a: a["done"] == 2)  # the first batch is stored
        t0 = time.monotonic()
        second = fork_server.wait_for(pid, "ack", match=lambda a: a["done"] == 4)
        left = (time.monotonic() - t0) * (second["total"] - 4) / 2  # the batches still to come
        mid_run += _killed(fork_server, pid, rng.uniform(0.0, left))  # False: it finished first
        acked = max((a["done"] for a in fork_server.acks(pid)), default=0)
        _store(root).close()
        with LabelingSession.open(root) as s:
            hashes = [r.sha256 or "" for r in s.store.images()]
            cache = s.feature_cache()
            assert len(cache) >= acked  # every acknowledged batch is in the cache
            n_data = cache.matrix().shape[0]
            index = cache.index_path.read_text().splitlines() if cache.index_path.exists() else []
            assert all(0 <= int(line.split()[1]) < n_data for line in index if len(line.split()) in (2, 3))
            before = len(cache)
            kept_rows += before
            result = s.embed(device="cpu", num_workers=0, rescan=False)  # the next run resumes
            assert result.computed == len(set(hashes)) - before and not result.failed
            expected = np.stack([reference[h] for h in hashes])  # rows line up with their images
            np.testing.assert_allclose(s.feature_cache().gather(hashes), expected, rtol=2e-2, atol=2e-2)
    reliability_stats["kill_embedding"] = {"kills": n, "kills_during_extraction": mid_run,
                                           "rows_kept_across_kills": kept_rows}


def _assert_complete_export(out: Path, expected: int) -> None:
    man = pd.read_csv(out / "dataset" / "manifest.csv")
    assert len(man) == expected == len(pd.read_parquet(out / "dataset" / "manifest.parquet"))
    files = {p.relative_to(out / "dataset").as_posix() for p in (out / "dataset").rglob("*") if p.is_file()}
    assert files - {"manifest.csv", "manifest.parquet"} == set(man["path"])
    if (out / "model").exists():
        for name in (*NETWORK_FILES, HEAD_WEIGHTS, MODEL_JSON):
            assert (out / "model" / name).stat().st_size > 0


def test_kill_during_export(small_project: Path, tmp_path: Path, fork_server: ForkServer,
                            reliability_stats: dict[str, Any]) -> None:
    rng = random.Random(SEED + 4)
    with LabelingSession.open(small_project) as s:
        s.train_round(FAST)
        s.accept(s.propose(SuggestConfig(batch_size=6)))
        expected = len(s.label_state().labels)
    out = tmp_path / "exports" / "labeled"
    n, leftovers, complete = kills(3), 0, 0
    for _ in range(n):
        pid = fork_server.start("export", root=str(small_project), out=str(out), model=True)
        fork_server.wait_for(pid, "ready")
        assert _killed(fork_server, pid, rng.uniform(0.05, 2.5))
        _store(small_project).close()
        if out.exists():  # never a partial export under the target name
            _assert_complete_export(out, expected)
            complete += 1
        others = [p.name for p in out.parent.iterdir() if p.name != out.name]
        assert all(name.startswith(".labeled.partial-") for name in others), others
        leftovers += len(others)
    with LabelingSession.open(small_project) as s:  # the next run resumes and cleans up
        s.export(out, overwrite=True, model=False)
    _assert_complete_export(out, expected)
    assert [p.name for p in out.parent.iterdir()] == ["labeled"]
    reliability_stats["kill_export"] = {"kills": n, "complete_export_found_after_kill": complete,
                                        "partial_leftovers_cleaned": leftovers}


def test_pending_suggestions_survive_a_round_killed_after_it_started(small_project: Path) -> None:
    with LabelingSession.open(small_project) as s:
        s.train_round(FAST)
        shown = s.propose(SuggestConfig(batch_size=5))
        s.store.start_round({"train": {}})  # what a round killed after recording its start leaves
    with LabelingSession.open(small_project) as s:
        assert [p.image_id for p in s.pending_suggestions()] == [p.image_id for p in shown]

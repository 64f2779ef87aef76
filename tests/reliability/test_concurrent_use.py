"""Two processes on one project, as two browser tabs would: decisions recorded at the same time
are all stored and visible to both, and a long training round in one does not hold up the other."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from crashkit import ForkServer

from labeltool.data.store import Store
from labeltool.session import LabelingSession

pytestmark = pytest.mark.slow
PER_PROCESS = int(os.environ.get("LABELTOOL_CONCURRENT_DECISIONS", "60"))  # per process


def test_two_processes_record_decisions_at_the_same_time(small_project: Path, tmp_path: Path, fork_server: ForkServer,
                                                         reliability_stats: dict[str, Any]) -> None:
    go, done_a, done_b = tmp_path / "go", tmp_path / "a.done", tmp_path / "b.done"
    common = {"root": str(small_project), "n": PER_PROCESS, "go": str(go)}
    a = fork_server.start("record", tag="a", offset=0, done=str(done_a), peer_done=str(done_b), **common)
    b = fork_server.start("record", tag="b", offset=3, done=str(done_b), peer_done=str(done_a), **common)
    fork_server.wait_for(a, "ready")
    fork_server.wait_for(b, "ready")
    go.touch()
    seen = {pid: fork_server.wait_for(pid, "seen", timeout=300) for pid in (a, b)}
    for pid in (a, b):
        assert os.WEXITSTATUS(fork_server.reap(pid)) == 0
        assert fork_server.errors(pid) == []  # no "database is locked" (or anything else) reached the user
    ids = {pid: [i for ack in fork_server.acks(pid) for i in ack["ids"]] for pid in (a, b)}
    assert len(ids[a]) == len(ids[b]) == PER_PROCESS
    span = {pid: (fork_server.wait_for(pid, "started"), fork_server.wait_for(pid, "finished")) for pid in (a, b)}
    assert span[a][0] < span[b][1] and span[b][0] < span[a][1]  # the two really wrote at the same time
    waits = [ack["seconds"] for pid in (a, b) for ack in fork_server.acks(pid)]
    both = set(ids[a]) | set(ids[b])
    with Store(small_project / ".labeltool" / "project.sqlite") as st:
        assert st.integrity_ok()
        assert {d.id for d in st.decisions()} == both
        assert {"a-class", "b-class"} <= set(st.classes())
    for pid in (a, b):
        assert set(seen[pid]["ids"]) == both  # each sees the other's decisions after a refresh
    with LabelingSession.open(small_project) as s:
        assert seen[a]["labels"] == seen[b]["labels"] == len(s.label_state().labels)
    order = [i in ids[a] for i in sorted(both)]
    interleaved = sum(1 for x, y in zip(order, order[1:], strict=False) if x != y)
    reliability_stats["concurrent_decisions"] = {
        "processes": 2, "decisions_stored": len(both), "errors_reaching_the_user": 0,
        "switches_between_writers": interleaved, "slowest_write_ms": round(1000 * max(waits), 1),
    }


def test_long_training_round_does_not_block_decisions(small_project: Path, fork_server: ForkServer,
                                                      reliability_stats: dict[str, Any]) -> None:
    pid = fork_server.start("long_train", root=str(small_project), steps=100)
    fork_server.wait_for(pid, "ready")
    fork_server.wait_for(pid, "training", timeout=300)
    latencies: list[float] = []
    with LabelingSession.open(small_project) as s:
        image_ids = sorted(s.image_rows())
        while not fork_server.has(pid, "trained") and not fork_server.has(pid, "error"):
            t0 = time.perf_counter()
            s.assign(image_ids[len(latencies) % len(image_ids)], s.classes[len(latencies) % 3])
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.02)
        trained = fork_server.wait_for(pid, "trained")
        assert os.WEXITSTATUS(fork_server.reap(pid)) == 0
        assert len(latencies) >= 3, "the round ended before decisions could overlap it; raise the steps"
        # never waiting for the round: each decision takes a small part of the round's time
        assert max(latencies) < min(5.0, 0.5 * trained["seconds"]), (max(latencies), trained["seconds"])
        assert len(s.store.decisions()) == len(latencies)
        assert s.store.rounds()[-1].finished is not None
    reliability_stats["decisions_during_training"] = {
        "decisions": len(latencies), "training_seconds": round(trained["seconds"], 2),
        "max_decision_latency_ms": round(1000 * max(latencies), 1),
    }

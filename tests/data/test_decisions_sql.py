"""The decision log read in SQL gives what replaying the whole log in Python gives."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from labeltool.data.decision_queries import newest_batch_in_force
from labeltool.data.decisions import Decision, replay, state_from_events
from labeltool.data.store import Store
from labeltool.data.undo import undo_rows

N_IMAGES, N_CLASSES = 12, 3
ACTORS = ("alice", "bob", None)


def _store(tmp_path: Path, seeds: dict[int, int]) -> Store:
    store = Store(tmp_path / "p.sqlite")
    store.ensure_classes([f"c{i}" for i in range(N_CLASSES)])
    store.upsert_images(
        [{"relpath": f"img{i}.png", "sha256": f"{i:064x}", "size_bytes": 1, "mtime_ns": 1, "width": 8, "height": 8,
          "status": "ok", "error": None, "seed_class_id": seeds.get(i + 1)} for i in range(N_IMAGES)],
        [f"img{i}.png" for i in range(N_IMAGES)],
    )
    return store


def _random_batch(rng: random.Random, ids: list[int]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for _ in range(rng.randint(1, 3)):
        image = rng.randint(1, N_IMAGES)
        action = rng.choice(["accept", "relabel", "assign", "pseudo", "unlabel", "reject", "reject", "undo", "undo"])
        if action == "undo":
            if ids:  # undo of anything earlier, undos included (a redo)
                rows.append({"image_id": image, "action": "undo", "undoes": rng.choice(ids)})
            continue
        cls = None if action == "unlabel" else rng.randrange(N_CLASSES)
        rows.append({"image_id": image, "class_id": cls, "action": action, "round": rng.choice([None, 1, 2]),
                     "confidence": rng.choice([None, rng.random()])})
    return rows


@pytest.mark.parametrize("seed", range(12))
def test_sql_state_and_undo_target_match_the_whole_log_replay(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    seeds = {i: rng.randrange(N_CLASSES) for i in range(1, N_IMAGES + 1) if rng.random() < 0.4}
    with _store(tmp_path, seeds) as store:
        ids: list[int] = []
        for step in range(60):
            ids += store.add_decisions(_random_batch(rng, ids), rng.choice(ACTORS))
            if step % 5:
                continue
            log = store.decisions()
            assert store.label_state() == replay(seeds, log), step
            for actor in ("alice", "bob", "carol"):
                expected, _ = undo_rows(log, actor)
                assert [i for i, _ in newest_batch_in_force(store._conn, actor)] == expected, (step, actor)
            undoer = rng.choice(("alice", "bob"))
            expected, _ = undo_rows(log, undoer)
            assert store.undo_last_batch(undoer) == expected
            assert store.label_state() == replay(seeds, store.decisions())


def test_events_without_decisions_give_the_seeds() -> None:
    assert state_from_events({1: 0, 2: 1}, [], lambda ids: {}) == replay({1: 0, 2: 1}, [])


def test_an_unactored_log_undoes_like_before() -> None:
    """Without actors (logs of older projects) per-actor undo is the old global undo."""
    log = [Decision(1, 10, 0, "accept", 1, 1, None, None, 0.0), Decision(2, 11, 0, "accept", 1, 2, None, None, 0.0)]
    assert undo_rows(log, "anyone") == undo_rows(log) == ([2], [{"image_id": 11, "action": "undo", "undoes": 2}])

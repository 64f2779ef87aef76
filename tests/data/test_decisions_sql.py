"""The decision log read in SQL gives what replaying the whole log in Python gives."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from labeltool.data import label_groups
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
def test_sql_state_and_undo_target_match_the_whole_log_replay(tmp_path: Path, seed: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if seed % 3 == 2:  # the one-pass rebuild instead of folding the new decisions
        monkeypatch.setattr(label_groups, "REBUILD_BACKLOG", 4)
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


def _assign(store: Store, image_id: int, class_id: int, actor: str) -> list[int]:
    return store.add_decisions([{"image_id": image_id, "class_id": class_id, "action": "assign"}], actor)


def test_the_group_table_follows_other_writers_and_is_saved(tmp_path: Path) -> None:
    with _store(tmp_path, {1: 0}) as reader, Store(tmp_path / "p.sqlite") as writer:
        assert reader.label_state().labels == {1: 0}
        _assign(writer, 2, 1, "w")
        assert reader.label_state().labels == {1: 0, 2: 1}  # folded from the other connection's row
        writer.undo_last_batch("w")
        assert reader.label_state().labels == {1: 0}
        upto = reader.get_meta("decision_groups_upto")
        assert upto == str(max(d.id for d in writer.decisions()))
        rows = reader._conn.execute("SELECT image_id, class_key, action, last_id FROM decision_groups").fetchall()
        assert [tuple(r) for r in rows] == []  # the undone assign left no group in force


def test_a_busy_database_is_answered_without_saving(tmp_path: Path) -> None:
    with _store(tmp_path, {}) as store, Store(tmp_path / "p.sqlite") as other:
        _assign(store, 3, 2, "a")
        other._conn.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            assert store.label_state().labels == {3: 2}
        finally:
            other._conn.execute("ROLLBACK")
        assert store.get_meta("decision_groups_upto") is None
        assert store.label_state().labels == {3: 2}
        assert store.get_meta("decision_groups_upto") is not None

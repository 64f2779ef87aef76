"""Tests for labeltool.data.undo: undo cancels the caller's newest batch still in force."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from labeltool.cli import main
from labeltool.data import decision_queries as queries
from labeltool.data import label_groups
from labeltool.data.decisions import Decision
from labeltool.data.store import Store
from labeltool.data.undo import ACTOR_ENV, command_line_actor, undo_rows
from labeltool.session import LabelingSession


def d(i: int, image: int, action: str, batch: int, undoes: int | None = None) -> Decision:
    return Decision(i, image, 0 if action not in ("undo", "unlabel") else None, action, 1, batch, undoes, None, 0.0)


def test_undo_takes_the_newest_batch_in_force_and_skips_undone_ones() -> None:
    log = [d(1, 10, "accept", 1), d(2, 11, "accept", 1), d(3, 12, "assign", 2)]
    assert undo_rows(log) == ([3], [{"image_id": 12, "action": "undo", "undoes": 3}])
    log.append(d(4, 12, "undo", 3, undoes=3))  # batch 2 undone: batch 1 is next
    target, rows = undo_rows(log)
    assert target == [1, 2] and [r["image_id"] for r in rows] == [10, 11]
    log += [d(5, 10, "undo", 4, undoes=1), d(6, 11, "undo", 4, undoes=2)]
    assert undo_rows(log) == ([], [])
    assert undo_rows([]) == ([], [])


# ---------------------------------------------------------------------------- per writer, in SQL
def _folder(root: Path) -> Path:
    """Six tiny images, three of them seeds of two classes."""
    for i in range(6):
        sub = root / ("cat" if i < 2 else "dog" if i < 3 else "pool")
        sub.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(sub / f"{i}.png")
    return root


def _pool_ids(s: LabelingSession) -> list[int]:
    return [r.id for r in s.store.images() if r.seed_class_id is None]


def test_undo_takes_back_only_the_callers_own_decisions(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "imgs")
    with LabelingSession.open(folder) as first, LabelingSession.open(folder) as second:
        assert first.actor != second.actor
        a, b, c = _pool_ids(first)
        on_a = first.assign(a, "cat")
        second.assign(b, "dog")  # newer, by another writer
        on_c = first.assign(c, "dog")
        assert first.undo() == on_c
        assert first.undo() == on_a
        assert first.undo() == []  # the other writer's decision is not this session's to undo
        assert second.label_state().labels[b] == second.classes.index("dog")
        assert len(second.undo()) == 1 and b not in second.label_state().labels
        assert {d.actor for d in first.store.decisions()} == {first.actor, second.actor}


def test_command_line_undo_follows_the_user_not_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path / "imgs")
    monkeypatch.setenv(ACTOR_ENV, "cli-tester")
    assert command_line_actor() == "cli-tester"
    assert main(["init", str(folder)]) == 0
    with LabelingSession.open(folder) as app_tab:
        a, b, _ = _pool_ids(app_tab)
        with LabelingSession.open(folder) as cli_run:
            cli_run.actor = command_line_actor()
            cli_run.assign(a, "cat")
        app_tab.assign(b, "cat")  # a browser session's decision, newer
        assert main(["review", str(folder), "--undo"]) == 0  # a new process: same user, undoes a
        assert main(["review", str(folder), "--undo"]) == 0  # nothing more of its own
        labels = app_tab.label_state().labels
        assert a not in labels and b in labels


def test_undo_reads_indexes_not_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "p.sqlite") as store:
        store.ensure_classes(["c"])
        store.upsert_images([{"relpath": "x.png", "sha256": "0" * 64, "size_bytes": 1, "mtime_ns": 1, "width": 8,
                              "height": 8, "status": "ok", "error": None, "seed_class_id": None}], ["x.png"])
        mine = store.add_decisions([{"image_id": 1, "class_id": 0, "action": "assign"}], "me")
        store.add_decisions([{"image_id": 1, "action": "unlabel"}], "other")
        monkeypatch.setattr(Store, "decisions", lambda self: pytest.fail("undo loaded the whole log"))
        assert store.undo_last_batch("me") == mine
        plans = {q: " ".join(str(tuple(r)) for r in store._conn.execute(f"EXPLAIN QUERY PLAN {q}", p))
                 for q, p in ((queries._OWN_BATCH_BELOW, ("me", 9)), (queries._ANYONES_BATCH_BELOW, (9,)),
                              (queries._BATCH_ROWS, (1, "me")), (label_groups._UNDO_CHAINS, ("[1]",)))}
        assert "decisions_actor_batch" in plans[queries._OWN_BATCH_BELOW]
        assert "decisions_actor_batch" in plans[queries._ANYONES_BATCH_BELOW]
        assert "decisions_batch" in plans[queries._BATCH_ROWS]
        assert "decisions_undoes" in plans[label_groups._UNDO_CHAINS]
        assert all("SCAN decisions" not in p or "INDEX" in p for p in plans.values()), plans

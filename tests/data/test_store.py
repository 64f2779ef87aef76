"""Store round-trip, reopen, append-only decisions and undo semantics."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from labeltool.data.decisions import Decision, replay
from labeltool.data.store import Store, StoredSuggestion


def _images(store: Store, n: int, seeds: dict[int, int] | None = None) -> None:
    seeds = seeds or {}
    store.upsert_images(
        [
            {"relpath": f"img{i}.png", "sha256": f"{i:064x}", "size_bytes": 10, "mtime_ns": 1, "width": 8,
             "height": 8, "status": "ok", "error": None, "seed_class_id": seeds.get(i + 1)}
            for i in range(n)
        ],
        [f"img{i}.png" for i in range(n)],
    )


def test_roundtrip_and_reopen_restores_exact_state(tmp_path: Path) -> None:
    db = tmp_path / "p.sqlite"
    with Store(db) as s:
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        ids = s.ensure_classes(["cat", "dog"])
        assert ids == {"cat": 0, "dog": 1}
        _images(s, 4, seeds={1: 0})
        rid = s.start_round({"loss": "triplet"})
        s.save_suggestions(rid, [StoredSuggestion(rid, 2, 1, 0.9, "knn", 0, 0.1, (1,))])
        s.add_decisions([{"image_id": 2, "class_id": 1, "action": "accept", "round": rid, "confidence": 0.9}])
        s.add_decisions([{"image_id": 3, "class_id": 0, "action": "reject", "round": rid}])
        s.finish_round(rid, {"acc": 0.5})
        before = s.label_state()
    with Store(db) as s:
        after = s.label_state()
        assert after.labels == before.labels == {1: 0, 2: 1}
        assert after.rejected == {(3, 0)}
        assert after.source == {1: "seed", 2: "reviewed"}
        assert s.classes() == ["cat", "dog"]
        assert s.rounds()[0].config == {"loss": "triplet"} and s.rounds()[0].metrics == {"acc": 0.5}
        assert s.suggestions(rid)[0].evidence == (1,)
        assert s.integrity_ok()


def test_decisions_cannot_be_updated_or_deleted(tmp_path: Path) -> None:
    with Store(tmp_path / "p.sqlite") as s:
        s.ensure_classes(["a"])
        _images(s, 1)
        s.ensure_classes(["cat"])
        s.add_decisions([{"image_id": 1, "class_id": 0, "action": "accept"}])
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            s._conn.execute("DELETE FROM decisions")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            s._conn.execute("UPDATE decisions SET class_id = NULL")
        assert len(s.decisions()) == 1


def test_unknown_action_is_refused_and_nothing_written(tmp_path: Path) -> None:
    with Store(tmp_path / "p.sqlite") as s:
        _images(s, 1)
        with pytest.raises(ValueError, match="unknown decision action"):
            s.add_decisions([{"image_id": 1, "action": "maybe"}])
        assert s.decisions() == []


def test_removed_images_keep_their_rows(tmp_path: Path) -> None:
    with Store(tmp_path / "p.sqlite") as s:
        _images(s, 3)
        s.upsert_images([], ["img0.png"])
        assert [r.relpath for r in s.images()] == ["img0.png"]
        assert len(s.images(only_present=False)) == 3


def test_every_scan_write_moves_the_images_version_and_counts_need_no_rows(tmp_path: Path) -> None:
    with Store(tmp_path / "p.sqlite") as s:
        assert s.images_version() == 0
        _images(s, 3)
        after_scan = s.images_version()
        assert after_scan > 0
        s.ensure_classes(["cat"])
        s.add_decisions([{"image_id": 1, "class_id": 0, "action": "accept"}])
        assert s.images_version() == after_scan  # a decision leaves the image rows alone
        s.upsert_images([], ["img0.png", "img2.png"])
        assert s.images_version() > after_scan
        assert [r[1] for r in s.usable_rows()] == ["img0.png", "img2.png"]
        assert s.present_counts() == (2, [])


def _d(i: int, image: int, action: str, cls: int | None = None, undoes: int | None = None, batch: int = 0) -> Decision:
    return Decision(i, image, cls, action, None, batch or i, undoes, None, float(i))


def test_replay_undo_and_redo() -> None:
    log = [_d(1, 10, "accept", 0), _d(2, 10, "undo", undoes=1)]
    assert replay({}, log).labels == {}
    log.append(_d(3, 10, "undo", undoes=2))  # undo of the undo: a redo
    assert replay({}, log).labels == {10: 0}


def test_replay_reject_relabel_and_seed_override() -> None:
    seeds = {5: 1}
    log = [_d(1, 7, "reject", 0), _d(2, 7, "relabel", 2), _d(3, 5, "reject", 1)]
    st = replay(seeds, log)
    assert st.labels == {7: 2}  # the seed label of 5 was rejected, so 5 is unlabeled now
    assert st.rejected == {(7, 0), (5, 1)}
    st2 = replay(seeds, [*log, _d(4, 5, "undo", undoes=3)])
    assert st2.labels == {7: 2, 5: 1} and st2.source[5] == "seed"
    st3 = replay(seeds, [*log, _d(4, 7, "unlabel")])
    assert 7 not in st3.labels


def test_accepting_a_rejected_class_lifts_the_rejection() -> None:
    st = replay({}, [_d(1, 3, "reject", 4), _d(2, 3, "assign", 4)])
    assert st.labels == {3: 4} and st.rejected == set()


def test_class_names_are_matched_and_stored_nfc(tmp_path: Path) -> None:
    decomposed, composed = "cafe\u0301", "caf\u00e9"  # a macOS folder name, and the same name typed
    db = tmp_path / "p.sqlite"
    with Store(db) as s:  # a project from before names were normalised: the raw name is stored
        s._conn.execute("INSERT INTO classes(id, name) VALUES (0, ?)", (decomposed,))
        s._conn.commit()
        _images(s, 2, seeds={1: 0})
        s.add_decisions([{"image_id": 2, "class_id": 0, "action": "accept", "round": None}])
    with Store(db) as s:
        assert s.ensure_classes([decomposed, "dog"]) == {composed: 0, "dog": 1}
        assert s.ensure_classes([composed]) == {composed: 0, "dog": 1}
        assert s.classes() == [composed, "dog"]
        assert s.label_state().labels == {1: 0, 2: 0}  # renamed in place: decisions keep their class

"""LabelingSession end to end on the bundled sample: scan, embed, rounds, decisions, undo, reopen."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from labeltool.config import ProjectConfig, SuggestConfig, TrainConfig
from labeltool.session import LabelingSession

from sample_helpers import TEST_IMAGE_SIZE, copy_sample

FAST = TrainConfig(epochs=5, min_steps=20)


def test_scan_finds_seed_classes_and_unlabeled(project: LabelingSession) -> None:
    st = project.stats()
    assert st["usable"] == 450 and st["labeled"] == 50 and st["unlabeled"] == 400
    assert len(st["classes"]) == 10 and all(n == 5 for n in st["per_class"].values())
    assert st["embedded"] == 450


def test_rescan_picks_up_added_removed_and_changed_files(project: LabelingSession) -> None:
    root = project.project.image_root
    shutil.copy(root / "unlabeled" / "u0001.png", root / "unlabeled" / "copy.png")
    (root / "unlabeled" / "u0002.png").unlink()
    (root / "unlabeled" / "u0003.png").write_bytes((root / "bag").iterdir().__next__().read_bytes())
    (root / "unlabeled" / "broken.jpg").write_bytes(b"not really a jpeg")
    summary = project.scan()
    assert (summary.added, summary.removed, summary.changed) == (2, 1, 1)
    assert summary.errors == [("unlabeled/broken.jpg", summary.errors[0][1])]
    assert "not an image" in summary.errors[0][1] or "cannot" in summary.errors[0][1]
    res = project.embed()
    assert res.computed == 0  # copy.png and the changed u0003 have contents already cached
    assert project.stats()["broken"][0][0] == "unlabeled/broken.jpg"


def test_embed_rerun_skips_unchanged_images(project: LabelingSession) -> None:
    assert project.embed().computed == 0


def test_round_propose_accept_reject_undo(project: LabelingSession) -> None:
    metrics = project.train_round(FAST)
    assert metrics["round"] == 1 and metrics["n_labeled"] == 50
    assert metrics["embedding_dim"] == 64 and 0.0 <= metrics["loo_1nn_accuracy"] <= 1.0
    rows = project.propose(SuggestConfig(batch_size=30))
    assert len(rows) == 30 and [r.rank for r in rows] == list(range(30))
    labeled_before = project.stats()["labeled"]
    project.accept(rows[:10])
    assert project.stats()["labeled"] == labeled_before + 10
    victim = rows[10]
    project.reject(victim.image_id, victim.class_id)
    assert (victim.image_id, victim.class_id) in project.label_state().rejected
    # a rejected pair is never proposed again, an accepted image never again
    again = project.propose(SuggestConfig(batch_size=400))
    pairs = {(r.image_id, r.class_id) for r in again}
    assert (victim.image_id, victim.class_id) not in pairs
    assert not {r.image_id for r in rows[:10]} & {r.image_id for r in again}
    # undo the rejection, then the accepted batch
    assert len(project.undo()) == 1
    assert (victim.image_id, victim.class_id) not in project.label_state().rejected
    assert len(project.undo()) == 10
    assert project.stats()["labeled"] == labeled_before
    pending = project.pending_suggestions()
    assert {p.image_id for p in pending} <= {r.image_id for r in again}


def test_reject_with_correction_and_assign_new_class(project: LabelingSession) -> None:
    project.train_round(FAST)
    s = project.propose(SuggestConfig(batch_size=5))[0]
    other = (s.class_id + 1) % len(project.classes)
    project.reject(s.image_id, s.class_id, correct_class=other)
    st = project.label_state()
    assert st.labels[s.image_id] == other and (s.image_id, s.class_id) in st.rejected
    project.undo()  # one action = one batch: both decisions go
    st = project.label_state()
    assert s.image_id not in st.labels and (s.image_id, s.class_id) not in st.rejected
    project.assign(s.image_id, "hat")
    assert project.classes[-1] == "hat" and project.label_state().labels[s.image_id] == 10
    with pytest.raises(ValueError, match="class name"):
        project.assign(s.image_id, "../evil")


def test_reopen_restores_exact_state_and_round(project: LabelingSession) -> None:
    project.train_round(FAST)
    rows = project.propose(SuggestConfig(batch_size=20))
    project.accept(rows[:7])
    state, emb = project.label_state(), project.current_round().embeddings
    root = project.project.image_root
    project.close()
    with LabelingSession.open(root) as again:
        assert again.label_state().labels == state.labels
        assert again.label_state().source == state.source
        np.testing.assert_allclose(again.current_round().embeddings, emb, rtol=1e-5, atol=1e-5)
        assert [p.image_id for p in again.pending_suggestions()] == [r.image_id for r in rows[7:]]


def test_a_continued_round_after_reopening_resumes_the_optimizer(project: LabelingSession) -> None:
    first = project.train_round(FAST)
    root, ckpts = project.project.image_root, project.project.checkpoints_dir
    project.close()
    with LabelingSession.open(root) as again:
        second = again.train_round(FAST)
        moments = again.checkpoint().load_optimizer_state()
    assert moments is not None
    assert {float(v) for k, v in moments.items() if k.endswith(".step")} == {first["steps"] + second["steps"]}
    assert sorted(p.name for p in ckpts.glob("*.optimizer.safetensors")) == [f"round-{second['round']}.optimizer.safetensors"]


def test_training_is_deterministic_for_a_seed(project: LabelingSession) -> None:
    a = project.train_round(FAST, continue_training=False)
    emb_a = project.current_round().embeddings.copy()
    b = project.train_round(FAST, continue_training=False)
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-5)
    np.testing.assert_allclose(project.current_round().embeddings, emb_a, rtol=1e-4, atol=1e-5)


def test_triplet_round_and_stratified_percent(project: LabelingSession) -> None:
    m = project.train_round(TrainConfig(loss="triplet", epochs=5, min_steps=20))
    assert m["final_loss"] >= 0
    rows = project.propose(SuggestConfig(percent=10, stratified=True, batch_size=None, confidence="1nn"))
    assert 0 < len(rows) <= 40
    per_class = np.bincount([r.class_id for r in rows], minlength=10)
    assert per_class.max() <= 4  # 10% of 400 = 40, over 10 predicted classes


def test_training_needs_two_labeled_classes(tmp_path: Path) -> None:
    root = tmp_path / "one"
    (root / "cats").mkdir(parents=True)
    src = next((copy_sample(tmp_path / "s") / "bag").iterdir())
    for i in range(3):
        shutil.copy(src, root / "cats" / f"{i}.png")
    with LabelingSession.open(root, config=ProjectConfig(image_size=TEST_IMAGE_SIZE)) as s:
        s.embed()
        with pytest.raises(ValueError, match="at least 2 classes"):
            s.train_round(FAST)


def test_propose_before_training_is_a_clear_error(project: LabelingSession) -> None:
    with pytest.raises(RuntimeError, match="no round"):
        project.propose(SuggestConfig())


def test_project_dir_inside_a_class_folder_is_refused(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "s")
    with pytest.raises(ValueError, match="inside the class folder"):
        LabelingSession.open(root, project_dir=root / "bag" / "proj")

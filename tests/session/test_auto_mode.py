"""Mode auto through the session, and rounds that train a network other than the project's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import labeltool
from labeltool.config import TrainConfig
from labeltool.session import LabelingSession

FAST = {"min_steps": 10, "max_steps": 10, "epochs": 1, "seed": 0}


def test_auto_scores_every_candidate_and_records_why(project: LabelingSession) -> None:
    metrics = project.train_round(TrainConfig(mode="auto", finetune={"steps": 3}, **FAST))
    rec = project.store.rounds()[-1].config
    choice = project.training_choice()
    assert choice is not None and rec["auto"] == choice.to_json()
    # 28 px grayscale images on a CPU: a head on frozen features, or a small net from scratch
    assert set(choice.scores) == {"frozen efficientnet_lite0 features + head",
                                  "hoffer_mnist trained from scratch + consistency"}
    assert all(0.0 <= v <= 1.0 for v in choice.scores.values())
    assert choice.n_held >= 10 and choice.n_labeled == int((project.pool().labels(project.label_state().labels) >= 0).sum())
    assert choice.candidate.label in choice.reason
    assert rec["train"]["mode"] == choice.candidate.mode  # the round trained what was chosen
    assert rec["train"]["backbone"] == choice.candidate.backbone
    if choice.candidate.backbone is not None:  # the from-scratch recipe learns from unlabeled images too
        assert rec["train"]["finetune"]["consistency"] == choice.candidate.consistency
    assert metrics["round"] == 1
    # the next round keeps the choice while the labeled set has not grown
    project.train_round(TrainConfig(mode="auto", finetune={"steps": 3}, **FAST))
    assert project.training_choice() == choice


def test_a_mode_picked_by_hand_is_never_overruled(project: LabelingSession) -> None:
    project.train_round(TrainConfig(mode="head", **FAST))
    assert "auto" not in project.store.rounds()[-1].config
    assert project.training_choice() is None


def test_a_round_can_train_a_small_network_from_scratch(project: LabelingSession, tmp_path: Path) -> None:
    project.train_round(TrainConfig(mode="finetune", backbone="hoffer_mnist", finetune={"steps": 5}, **FAST))
    rec = project.store.rounds()[-1]
    assert rec.config["backbone"]["name"] == "hoffer_mnist" and rec.config["backbone_from"] == "scratch"
    cur = project.current_round()
    assert cur.embeddings.shape[0] == len(project.pool())
    assert cur.checkpoint.finetuned and cur.checkpoint.head.in_dim == 128
    # a second round continues that network; a reopened project restores it from its checkpoint
    project.train_round(TrainConfig(mode="finetune", backbone="hoffer_mnist", finetune={"steps": 5}, **FAST))
    assert project.store.rounds()[-1].config["backbone_from"] == "round-1"
    emb = project.current_round().embeddings
    with LabelingSession.open(project.project.image_root) as again:
        np.testing.assert_allclose(again.current_round().embeddings, emb, atol=1e-4)
        paths = [again.project.image_path(r) for r in again.pool().relpaths[:6]]
        names, probs = again.predict(paths)
        assert all(n in again.classes for n in names) and probs.shape == (6, len(again.classes))
        # the exported model is that network too, and predicts as the session does
        out = again.export(tmp_path / "out", dataset=False)
    model = labeltool.load_model(str(next(out.rglob("model.json")).parent))
    assert model.spec.name == "hoffer_mnist" and model.spec.input_size == 28
    pred = model.predict(paths)
    np.testing.assert_allclose(pred.probabilities, probs, atol=1e-4)
    assert pred.classes == names


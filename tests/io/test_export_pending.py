"""Export of the pending suggestions as unreviewed labels, and the overwrite refusal's wording."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.io.export import PENDING_SOURCE
from labeltool.io.export_target import OVERWRITE_HINT, TargetExistsError
from labeltool.session import LabelingSession

FAST = TrainConfig(epochs=5, min_steps=20, max_steps=20)


def test_pending_suggestions_are_exported_only_when_asked_and_marked(project: LabelingSession, tmp_path: Path) -> None:
    project.train_round(FAST)
    rows = project.propose(SuggestConfig(batch_size=12))
    project.accept(rows[:2])
    pending = project.pending_suggestions()
    assert len(pending) == 10
    labeled = len(project.label_state().labels)

    plain = project.export_from_app(tmp_path / "plain", model=False)
    man = pd.read_parquet(plain / "dataset" / "manifest.parquet")
    assert len(man) == labeled and PENDING_SOURCE not in set(man["source"])  # off by default

    out = project.export_from_app(tmp_path / "with", model=False, include_pending=True)
    man = pd.read_parquet(out / "dataset" / "manifest.parquet")
    assert len(man) == labeled + len(pending)
    marked = man[man["source"] == PENDING_SOURCE]
    images, classes = project.image_rows(), project.classes
    assert dict(zip(marked["source_path"], marked["label"], strict=True)) == {
        images[s.image_id].relpath: classes[s.class_id] for s in pending}
    assert sorted(marked["confidence"].round(6)) == sorted(round(s.confidence, 6) for s in pending)
    assert set(marked["round"]) == {project.store.rounds()[-1].id}
    assert set(man[man["source"] != PENDING_SOURCE]["source"]) == {"seed", "reviewed"}
    csv = pd.read_csv(out / "dataset" / "manifest.csv")
    assert (csv["source"] == PENDING_SOURCE).sum() == len(pending)
    for p in marked["path"]:
        assert (out / "dataset" / p).is_file()


def test_overwrite_refusal_names_the_way_to_overwrite(project: LabelingSession, tmp_path: Path) -> None:
    project.train_round(FAST)
    out = project.export(tmp_path / "out", model=False)
    with pytest.raises(TargetExistsError, match=r"pass overwrite=True \(--overwrite\)"):
        project.export(out, model=False)
    with pytest.raises(TargetExistsError) as caught:
        project.export_from_app(out, model=False)
    assert OVERWRITE_HINT not in str(caught.value)
    assert "tick **Overwrite a previous export**" in str(caught.value)  # the Export page's checkbox
    assert project.export_from_app(out, model=False, overwrite=True) == out

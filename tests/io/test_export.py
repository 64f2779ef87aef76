"""Export: ImageFolder layout + manifest, atomic replace, refusals, and the model round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labeltool import load_model
from labeltool.config import SuggestConfig, TrainConfig
from labeltool.io.export import neutralize_cell, safe_dirname
from labeltool.session import LabelingSession

FAST = TrainConfig(epochs=5, min_steps=20)


def test_export_roundtrip(project: LabelingSession, tmp_path: Path) -> None:
    """Triplet: the model's classifier is the prototypes (a loss's own classifier, cross-entropy's,
    is exported in tests/io/test_model_io.py)."""
    from torchvision.datasets import ImageFolder

    project.train_round(TrainConfig(loss="triplet", epochs=5, min_steps=20))
    rows = project.propose(SuggestConfig(batch_size=12))
    project.accept(rows[:8])
    project.record([{"image_id": r.image_id, "class_id": r.class_id, "action": "pseudo", "confidence": r.confidence}
                    for r in rows[8:10]])
    out = project.export(tmp_path / "out")
    state = project.label_state()

    ds = ImageFolder(str(out / "dataset"))
    assert len(ds) == len(state.labels) == 60
    assert sorted(ds.classes) == sorted(project.classes)
    man = pd.read_parquet(out / "dataset" / "manifest.parquet")
    csv = pd.read_csv(out / "dataset" / "manifest.csv")
    assert list(man.columns) == ["path", "label", "source", "round", "confidence", "source_path", "sha256"]
    assert len(man) == len(csv) == 60
    assert man["source"].value_counts().to_dict() == {"seed": 50, "reviewed": 8, "pseudo": 2}
    rel_to_label = dict(zip(man["source_path"], man["label"], strict=True))
    images = project.image_rows()
    for image_id, class_id in state.labels.items():
        assert rel_to_label[images[image_id].relpath] == project.classes[class_id]
    for p in man["path"]:
        assert (out / "dataset" / p).is_file()

    # the exported model reproduces in-process predictions, through PyTorch and through ONNX Runtime
    sample = [project.project.image_path(images[i].relpath) for i in list(images)[:6]]
    names, probs = project.predict(sample)
    for runtime in ("torch", "onnx"):
        model = load_model(out, runtime=runtime)
        pred = model.predict(sample)
        assert pred.classes == names
        np.testing.assert_allclose(pred.probabilities, probs, atol=1e-4)
    assert model.meta["classes"] == project.classes and (out / "model" / "head.safetensors").is_file()


def test_export_refuses_non_empty_target_and_overwrites_atomically(project: LabelingSession, tmp_path: Path) -> None:
    """``overwrite`` replaces a previous export (even a file added inside it), never a user's folder."""
    project.train_round(FAST)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        project.export(target, model=False)
    with pytest.raises(FileExistsError, match=f"{target} is not a previous labeltool export.*'keep.txt'"):
        project.export(target, model=False, overwrite=True)
    assert (target / "keep.txt").read_text() == "mine"
    (target / "keep.txt").unlink()
    project.export(target, model=False)
    (target / "dataset" / "keep.txt").write_text("mine")
    project.export(target, model=False, overwrite=True)
    assert not (target / "dataset" / "keep.txt").exists() and (target / "dataset" / "manifest.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary leftovers


def test_export_refuses_targets_inside_the_image_folder_and_symlinks(project: LabelingSession, tmp_path: Path) -> None:
    project.train_round(FAST)
    with pytest.raises(ValueError, match="inside the image folder"):
        project.export(project.project.image_root / "export")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        project.export(link)


def test_export_without_pseudo_labels(project: LabelingSession, tmp_path: Path) -> None:
    project.train_round(FAST)
    rows = project.propose(SuggestConfig(batch_size=4))
    project.record([{"image_id": r.image_id, "class_id": r.class_id, "action": "pseudo"} for r in rows])
    out = project.export(tmp_path / "o", model=False, include_pseudo=False, link=True)
    man = pd.read_csv(out / "dataset" / "manifest.csv")
    assert set(man["source"]) == {"seed"} and len(man) == 50


def test_safe_names_and_formula_cells() -> None:
    assert safe_dirname("..") == "_unnamed"
    assert safe_dirname("a/b\\c") == "a_b_c"
    assert safe_dirname("CON") == "_CON"
    assert safe_dirname("tab\tname ") == "tab_name"
    assert neutralize_cell("=cmd|' /C calc'!A0") == "'=cmd|' /C calc'!A0"
    assert neutralize_cell("cat") == "cat" and neutralize_cell(3) == 3

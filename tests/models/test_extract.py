"""Feature extraction: features belong to the bytes they were computed from; workers are bounded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeltool.data.features import FeatureCache
from labeltool.models import extract
from labeltool.models.backbones import create_backbone
from labeltool.models.extract import extract_to_cache, pick_device, worker_bound

from sample_helpers import TEST_IMAGE_SIZE


def _image(path: Path, color: tuple[int, int, int]) -> str:
    Image.new("RGB", (40, 30), color).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def backbone():  # type: ignore[no-untyped-def]
    return create_backbone(image_size=TEST_IMAGE_SIZE)


def test_a_file_edited_after_the_scan_is_not_cached_under_its_old_hash(tmp_path: Path, backbone) -> None:  # type: ignore[no-untyped-def]
    edited, kept = tmp_path / "edited.png", tmp_path / "kept.png"
    old_hash = _image(edited, (200, 10, 10))
    kept_hash = _image(kept, (10, 200, 10))
    new_hash = _image(edited, (10, 10, 200))  # rewritten between the scan and the extraction
    cache = FeatureCache(tmp_path / "cache", "k", backbone.spec.feature_dim)

    res = extract_to_cache(backbone, cache, [(old_hash, edited), (kept_hash, kept)], device=pick_device("cpu"))

    assert old_hash not in cache and new_hash not in cache
    assert kept_hash in cache and res.computed == 1
    assert list(res.failed) == [str(edited)]
    assert "changed since it was scanned" in res.failed[str(edited)] and "rescan" in res.failed[str(edited)]


def test_features_are_those_of_the_hashed_bytes(tmp_path: Path, backbone) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "a.png"
    sha = _image(path, (30, 60, 90))
    cache = FeatureCache(tmp_path / "cache", "k", backbone.spec.feature_dim)
    extract_to_cache(backbone, cache, [(sha, path)], device=pick_device("cpu"))
    (_, feats, errors), = extract.iter_features(backbone, [path], device=pick_device("cpu"))
    assert errors == [""]
    np.testing.assert_allclose(cache.gather([sha]), feats.astype(np.float16).astype(np.float32))


def test_too_many_workers_are_clamped_with_a_note(tmp_path: Path, backbone, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    bound = worker_bound()
    assert 1 <= bound <= extract.usable_cpus()
    seen: list[int] = []
    real_loader = extract.DataLoader

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["num_workers"])
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(extract, "DataLoader", spy)
    path = tmp_path / "a.png"
    sha = _image(path, (1, 2, 3))
    cache = FeatureCache(tmp_path / "cache", "k", backbone.spec.feature_dim)
    res = extract_to_cache(backbone, cache, [(sha, path)], device=pick_device("cpu"), num_workers=10000)
    assert seen == [bound] and res.computed == 1
    assert len(res.notes) == 1 and "10000" in res.notes[0] and str(bound) in res.notes[0]


def test_a_worker_count_within_the_bound_is_kept_and_negative_is_refused(tmp_path: Path, backbone) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "a.png"
    sha = _image(path, (1, 2, 3))
    cache = FeatureCache(tmp_path / "cache", "k", backbone.spec.feature_dim)
    res = extract_to_cache(backbone, cache, [(sha, path)], device=pick_device("cpu"), num_workers=0)
    assert res.notes == [] and res.computed == 1
    with pytest.raises(ValueError, match="--workers must be 0 or more"):
        extract_to_cache(backbone, cache, [(sha, path)], device=pick_device("cpu"), num_workers=-1)


def test_embed_rescans_a_file_edited_mid_run_and_then_caches_its_new_content(project) -> None:  # type: ignore[no-untyped-def]
    path = project.project.image_root / "unlabeled" / "edited-late.png"
    path.parent.mkdir(exist_ok=True)
    old_hash = _image(path, (250, 250, 0))
    project.scan()
    new_hash = _image(path, (0, 250, 250))  # edited after the scan, before the extraction
    res = project.embed(device="cpu", rescan=False)
    assert list(res.failed) == [str(path)] and old_hash not in project.feature_cache()
    row = next(r for r in project.store.images() if r.relpath == "unlabeled/edited-late.png")
    assert row.sha256 == new_hash  # the session rescanned the failed file
    assert project.embed(device="cpu", rescan=False).computed == 1 and new_hash in project.feature_cache()

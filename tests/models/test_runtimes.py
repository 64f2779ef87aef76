"""Inference runtimes: every registered runtime gives PyTorch's features; ``auto`` picks sensibly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeltool.config import EXPORT_MIN_IMAGES
from labeltool.data.features import FeatureCache
from labeltool.models import extract, runtimes
from labeltool.models.backbones import create_backbone
from labeltool.models.extract import RuntimeChoice, choose_runtime, extract_to_cache, features_fn
from labeltool.models.runtimes import RUNTIMES, exported_backbone, onnx_file, resolve_runtime, runtime_names

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def net():  # type: ignore[no-untyped-def]
    return create_backbone("hoffer_mnist")


@pytest.fixture(scope="module")
def export_dir(net, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("runtime")
    exported_backbone(net, folder, "hoffer")
    return folder


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_every_registered_runtime_gives_pytorchs_features(name: str, net, export_dir: Path) -> None:  # type: ignore[no-untyped-def]
    if not RUNTIMES[name].installed():
        pytest.skip(f"{RUNTIMES[name].module} is not installed")
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(5, 3, 28, 28)).astype(np.float32))
    expected = features_fn(net, CPU)(x)
    got = features_fn(net, CPU, RuntimeChoice(name, export_dir, "hoffer"))(x)
    assert got.shape == expected.shape == (5, net.spec.feature_dim) and got.dtype == np.float32
    assert _cosines(got, expected).min() > 0.999
    one = features_fn(net, CPU, RuntimeChoice(name, export_dir, "hoffer"))(x[:1])  # the batch size is dynamic
    assert _cosines(one, expected[:1]).min() > 0.999


def test_auto_runs_pytorch_on_a_gpu_and_an_installed_runtime_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    installed = [n for n in runtimes.CPU_PREFERENCE if RUNTIMES[n].installed()]
    assert resolve_runtime("auto", CPU) == (installed[0] if installed else "torch")
    monkeypatch.setattr(runtimes, "CPU_PREFERENCE", ())
    assert resolve_runtime("auto", CPU) == "torch"


def test_a_runtime_that_cannot_run_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'.*auto, torch"):
        resolve_runtime("tensorrt", CPU)
    with pytest.raises(ValueError, match="CPU only.*--runtime torch"):
        resolve_runtime("onnxruntime", torch.device("cuda"))
    missing = runtimes.Runtime("missing", "no_such_package_xyz", "", lambda p, t: lambda x: x)
    runtimes.RUNTIMES["missing"] = missing
    try:
        with pytest.raises(ValueError, match="pip install no_such_package_xyz"):
            resolve_runtime("missing", CPU)
    finally:
        del runtimes.RUNTIMES["missing"]
    assert runtime_names()[:2] == ["auto", "torch"]


def test_auto_exports_only_for_a_job_that_pays_for_it_or_when_an_export_is_cached(export_dir: Path) -> None:
    name = resolve_runtime("auto", CPU)
    if name == "torch":
        pytest.skip("no inference runtime installed")
    assert choose_runtime("auto", CPU, 10, export_dir, "not-exported").runtime == "torch"
    assert choose_runtime("auto", CPU, EXPORT_MIN_IMAGES, export_dir, "not-exported").runtime == name
    assert choose_runtime("auto", CPU, 10, export_dir, "hoffer") == RuntimeChoice(name, export_dir, "hoffer")
    assert choose_runtime("auto", CPU, 10**6, None, "k").runtime == "torch"
    assert choose_runtime("onnxruntime", CPU, 1, export_dir, "k").runtime == "onnxruntime"  # asked for: always
    with pytest.raises(ValueError, match="needs a folder"):
        choose_runtime("onnxruntime", CPU, 1, None, "k")


def _images(folder: Path, n: int) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(1)
    items = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(path)
        items.append((hashlib.sha256(path.read_bytes()).hexdigest(), path))
    return items


def test_extraction_in_a_runtime_caches_pytorchs_features_from_the_kept_export(
        net, export_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    items = _images(tmp_path, 6)
    by_torch = FeatureCache(tmp_path / "torch", "hoffer", net.spec.feature_dim)
    by_ort = FeatureCache(tmp_path / "ort", "hoffer", net.spec.feature_dim)  # the key of the fixture's export
    made = onnx_file(export_dir, "hoffer").stat().st_mtime_ns
    assert extract_to_cache(net, by_torch, items, device=CPU).runtime == "torch"
    res = extract_to_cache(net, by_ort, items, device=CPU, runtime="onnxruntime", export_dir=export_dir)
    assert res.runtime == "onnxruntime" and res.computed == 6 and not res.failed
    assert onnx_file(export_dir, "hoffer").stat().st_mtime_ns == made  # reused, not exported again
    hashes = [h for h, _ in items]
    a = np.asarray(by_torch.matrix()[by_torch.rows_for(hashes)], dtype=np.float32)
    b = np.asarray(by_ort.matrix()[by_ort.rows_for(hashes)], dtype=np.float32)
    assert _cosines(a, b).min() > 0.999  # float16 storage on both sides


def test_auto_falls_back_to_pytorch_with_a_note_when_the_export_cannot_be_written(
        net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    if resolve_runtime("auto", CPU) == "torch":
        pytest.skip("no inference runtime installed")
    monkeypatch.setattr(extract, "EXPORT_MIN_IMAGES", 1)
    items = _images(tmp_path, 3)
    blocked = tmp_path / "exports"
    blocked.write_text("a file where the export folder should be")
    cache = FeatureCache(tmp_path / "cache", "k", net.spec.feature_dim)
    res = extract_to_cache(net, cache, items, device=CPU, runtime="auto", export_dir=blocked)
    assert res.runtime == "torch" and res.computed == 3
    assert any("could not export hoffer_mnist" in n and "extracting with PyTorch" in n for n in res.notes)
    with pytest.raises(OSError):  # asked for by name: the failure is the user's to see
        extract_to_cache(net, FeatureCache(tmp_path / "c2", "k", net.spec.feature_dim), items, device=CPU,
                         runtime="onnxruntime", export_dir=blocked)

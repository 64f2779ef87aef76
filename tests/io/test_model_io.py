"""Exported model folders: the torch.export and ONNX files, both runtimes, format 1 folders, and
``docs/predict_onnx.py`` run with numpy, pillow and onnxruntime alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from labeltool import load_model
from labeltool.config import TrainConfig
from labeltool.io import model_runtimes
from labeltool.io.model_io import FORMAT_VERSION, MODEL_JSON, NETWORK_FILES
from labeltool.io.model_runtimes import LEGACY_TORCHSCRIPT
from labeltool.session import LabelingSession

from sample_helpers import REPO

FAST = TrainConfig(loss="cross_entropy", epochs=5, min_steps=20)  # a loss with its own classifier
SCRIPT = REPO / "docs" / "predict_onnx.py"
N_IMAGES = 6

# Runs the script given as argv[1] in a Python where importing torch or labeltool fails.
NO_TORCH_DRIVER = r'''
import importlib.abc, runpy, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "labeltool"):
            raise ModuleNotFoundError(f"import of {name} is refused here", name=name)
        return None

sys.meta_path.insert(0, Refuse())
for refused in ("torch", "labeltool"):
    try:
        __import__(refused)
    except ModuleNotFoundError:
        continue
    raise AssertionError(f"import {refused} worked despite the finder")
script, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as done:
    if done.code:
        raise
leaked = sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "labeltool"))
assert not leaked, leaked
'''


@dataclass(frozen=True)
class Exported:
    """A trained round's model folder, a format 1 folder of the same model, sample images and
    the session's own prediction of them (names ``[n]``, probabilities ``[n, C]``)."""

    model_dir: Path
    legacy_dir: Path
    images: list[Path]
    names: list[str]
    probs: np.ndarray


@pytest.fixture(scope="module")
def exported(embedded_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The model is exported with every warning raised as an error (no deprecation notice)."""
    base = tmp_path_factory.mktemp("model_io")
    root = base / "sample"
    shutil.copytree(embedded_sample, root)
    images = [sorted(d.glob("*.png"))[0] for d in sorted(p for p in root.iterdir() if p.is_dir()
                                                          and not p.name.startswith("."))][:N_IMAGES]
    with LabelingSession.open(root) as s:
        s.train_round(FAST)
        names, probs = s.predict(images)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = s.export(base / "out", dataset=False)
        legacy = _write_format_1(s, out / "model", base / "legacy")
    return Exported(out / "model", legacy, images, names, probs)


def _write_format_1(s: LabelingSession, model_dir: Path, dest: Path) -> Path:
    """The folder an export of format 1 wrote: TorchScript, head and a format 1 model.json."""
    dest.mkdir()
    side = s.backbone_spec.input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # writing TorchScript is the deprecated part
        traced = torch.jit.trace(s.build_model().eval(), torch.zeros(2, 3, side, side), check_trace=False)
    traced.save(str(dest / LEGACY_TORCHSCRIPT))
    shutil.copy(model_dir / "head.safetensors", dest / "head.safetensors")
    meta = json.loads((model_dir / MODEL_JSON).read_text())
    keep = ("backbone", "classes", "round", "loss", "head", "classifier", "train_config", "project", "torch_version")
    old = {k: meta[k] for k in keep} | {
        "format_version": 1, "input": f"float32 [B, 3, {side}, {side}] after preprocessing",
        "output": f"float32 [B, {len(meta['classes'])}] class probabilities",
        "preprocessing": {"resize_short_side": side, "interpolation": "bicubic", "center_crop": side,
                          "scale": "uint8 / 255", "mean": meta["backbone"]["mean"], "std": meta["backbone"]["std"],
                          "color": "RGB"},
    }
    (dest / MODEL_JSON).write_text(json.dumps(old))
    return dest


def test_both_runtimes_predict_as_the_session_without_warnings(exported: Exported) -> None:
    meta = json.loads((exported.model_dir / MODEL_JSON).read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2 and meta["classifier"] == "loss"
    assert sorted(p.name for p in exported.model_dir.iterdir()) == sorted([*NETWORK_FILES, "head.safetensors", MODEL_JSON])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        models = {rt: load_model(exported.model_dir.parent, runtime=rt) for rt in ("auto", "torch", "onnx")}
        preds = {rt: m.predict(exported.images) for rt, m in models.items()}
        single = models["onnx"].predict(exported.images[:1])  # the batch dimension is dynamic
    assert {rt: m.model_file.name for rt, m in models.items()} == {
        "auto": "model.pt2", "torch": "model.pt2", "onnx": "model.onnx"}
    for pred in preds.values():
        assert pred.classes == exported.names
        np.testing.assert_allclose(pred.probabilities, exported.probs, atol=1e-4)
    np.testing.assert_allclose(single.probabilities, exported.probs[:1], atol=1e-4)


def test_model_json_states_the_onnx_signature(exported: Exported) -> None:
    meta = json.loads((exported.model_dir / MODEL_JSON).read_text())
    session = ort.InferenceSession(str(exported.model_dir / meta["files"]["onnx"]), providers=["CPUExecutionProvider"])
    (given,), (produced,) = session.get_inputs(), session.get_outputs()
    side, n_classes = meta["backbone"]["input_size"], len(meta["classes"])
    assert (given.name, given.type, given.shape[1:]) == (meta["input"]["name"], "tensor(float)", [3, side, side])
    assert (produced.name, produced.type, produced.shape[1:]) == (meta["output"]["name"], "tensor(float)", [n_classes])
    assert isinstance(given.shape[0], str) and given.shape[0] == produced.shape[0]  # one symbolic batch size
    assert meta["input"]["dtype"] == meta["output"]["dtype"] == "float32"
    assert meta["input"]["shape"] == ["batch", 3, side, side] and meta["output"]["shape"] == ["batch", n_classes]
    assert meta["preprocessing"]["normalize"]["mean"] == meta["backbone"]["mean"]


def test_the_documented_onnx_script_runs_without_torch_or_labeltool(exported: Exported, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_DRIVER, str(SCRIPT), str(exported.model_dir), *map(str, exported.images),
         "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    probs = np.array([row["probabilities"] for row in result["predictions"]])
    assert [row["class"] for row in result["predictions"]] == exported.names
    assert probs.argmax(1).tolist() == exported.probs.argmax(1).tolist()
    # Pillow's bicubic resize equals torchvision's up to 2 levels on a few pixels
    np.testing.assert_allclose(probs, exported.probs, atol=2e-3)


def test_a_format_1_folder_still_loads_quietly(exported: Exported) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(exported.legacy_dir)
        pred = model.predict(exported.images)
    assert (model.runtime, model.model_file.name) == ("torch", LEGACY_TORCHSCRIPT)
    assert pred.classes == exported.names
    np.testing.assert_allclose(pred.probabilities, exported.probs, atol=1e-4)
    with pytest.raises(FileNotFoundError, match=r"no model file for runtime 'onnx'.*export the model again"):
        load_model(exported.legacy_dir, runtime="onnx")


def test_a_missing_runtime_package_says_what_to_install(exported: Exported, monkeypatch: pytest.MonkeyPatch) -> None:
    real = model_runtimes.importlib.util.find_spec
    monkeypatch.setattr(model_runtimes.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install onnxruntime"):
        load_model(exported.model_dir, runtime="onnx")


def _folder(tmp_path: Path, meta: object) -> Path:
    (tmp_path / MODEL_JSON).write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return tmp_path


META = {"format_version": 2, "classes": ["a", "b"],
        "backbone": {"name": "x", "input_size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}}


@pytest.mark.parametrize(("runtime", "name", "match"), [
    ("auto", "model.pt2", r"cannot be read by PyTorch .*runtime='onnx'"),
    ("onnx", "model.onnx", "cannot be read by ONNX Runtime .*export the model again"),
])
def test_a_damaged_network_file_is_a_clear_error(tmp_path: Path, runtime: str, name: str, match: str) -> None:
    (_folder(tmp_path, META) / name).write_bytes(b"not a model")
    with pytest.raises(ValueError, match=match):
        load_model(tmp_path, runtime=runtime)


@pytest.mark.parametrize(("meta", "runtime", "error", "match"), [
    (None, "auto", FileNotFoundError, "not an exported labeltool model"),
    ("{", "auto", ValueError, "not valid JSON"),
    ({"format_version": 2}, "auto", ValueError, "lacks classes, backbone"),
    (META | {"format_version": 3}, "auto", ValueError, "newer labeltool"),
    (META, "tensorrt", ValueError, "choose one of auto, torch, onnx"),
    (META, "auto", FileNotFoundError, "looked for model.pt2, model.onnx, model.torchscript.pt"),
])
def test_bad_model_folders_are_clear_errors(tmp_path: Path, meta: object, runtime: str, error: type, match: str) -> None:
    folder = tmp_path if meta is None else _folder(tmp_path, meta)
    with pytest.raises(error, match=match):
        load_model(folder, runtime=runtime)

"""The fine-tuning dataset keeps small images at native size after their first decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import labeltool.train.finetune_data as fd
from labeltool.config import FinetuneConfig
from labeltool.models.backbones import get_spec


def _files(tmp_path: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(p)
        out.append(p)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    return [*out, tmp_path / "bad.png"]


@pytest.mark.parametrize("consistency", [0.0, 1.0])
def test_small_images_are_decoded_once_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               consistency: float) -> None:
    paths = _files(tmp_path, 3)
    calls: list[Path] = []
    real = fd.load_image
    monkeypatch.setattr(fd, "load_image", lambda p: calls.append(Path(p)) or real(p))
    spec = get_spec("hoffer_mnist")
    tf, strong, native = fd._transforms(spec, FinetuneConfig(consistency=consistency))
    assert native is not None and (strong is not None) == (consistency > 0)
    ds = fd.ImageLabelDataset(paths, [0, 1, -1, -1], tf, spec.input_size, strong, native)
    for _ in range(3):
        for i in range(len(paths)):
            x, s, _, ok = ds[i]
            assert x.shape == (3, 28, 28) and x.dtype == torch.float32
            assert ok == (i < 3)
            assert s.numel() == (3 * 28 * 28 if consistency and i >= 2 else 0)
    assert sorted(calls) == sorted(paths)  # every file read once, the broken one included
    views = [ds[0][0] for _ in range(20)]
    assert any(not torch.equal(views[0], v) for v in views[1:])  # kept once, augmented anew on every draw
    big = fd._transforms(get_spec("efficientnet_lite0"), FinetuneConfig())
    assert big[2] is None  # 224 px images are not kept: decoded per draw

"""Training augmentations: shapes, the flip policy, the reflect shift, and the strong view's cutout."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from labeltool.models.augment import RandomShift, strong_transform, weak_transform
from labeltool.models.backbones import BackboneSpec, get_spec

MNIST = get_spec("hoffer_mnist")  # 28 px, hflip=False
LARGE = replace(get_spec("hoffer_cifar"), input_size=72)  # takes the random-resized-crop path


pytestmark = pytest.mark.usefixtures("one_thread")


def _ramp(size: int = 40) -> Image.Image:
    """A gray image getting brighter left to right: a flip makes its left half the brighter one."""
    row = np.linspace(0, 255, size).astype(np.uint8)
    return Image.fromarray(np.stack([np.tile(row, (size, 1))] * 3, axis=-1))


@pytest.mark.parametrize("spec", [MNIST, LARGE], ids=["small", "large"])
def test_views_are_normalised_square_tensors(spec: BackboneSpec) -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8))
    for tf in (weak_transform(spec), strong_transform(spec)):
        x = tf(img)
        assert x.shape == (3, spec.input_size, spec.input_size) and x.dtype == torch.float32
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("spec", [MNIST, LARGE], ids=["small", "large"])
def test_no_flip_when_the_spec_forbids_it(spec: BackboneSpec) -> None:
    img, half = _ramp(), spec.input_size // 2
    torch.manual_seed(0)
    no_flip, may_flip = weak_transform(replace(spec, hflip=False)), weak_transform(replace(spec, hflip=True))
    left_darker = [bool(x[:, :, :half].mean() < x[:, :, half:].mean()) for x in (no_flip(img) for _ in range(80))]
    assert all(left_darker)
    flipped = [bool(x[:, :, :half].mean() > x[:, :, half:].mean()) for x in (may_flip(img) for _ in range(40))]
    assert 5 < sum(flipped) < 35  # about half the draws flip when allowed


def test_random_shift_is_reflect_pad_then_crop() -> None:
    x = torch.arange(2 * 28 * 28).reshape(2, 28, 28)
    padded = np.pad(x.numpy(), ((0, 0), (3, 3), (3, 3)), mode="reflect")
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        y = RandomShift(3)(x)
        torch.manual_seed(seed)
        dy, dx = (int(v) for v in torch.randint(0, 7, (2,)))
        np.testing.assert_array_equal(y.numpy(), padded[:, dy : dy + 28, dx : dx + 28])
        seen.add((dy, dx))
    assert len(seen) > 10


def test_weak_small_view_is_a_shift_of_the_plain_image() -> None:
    spec = MNIST
    img = _ramp(28)
    plain = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    plain = (plain - spec.mean[0]) / spec.std[0]
    torch.manual_seed(1)
    x = weak_transform(spec)(img)
    # a horizontal shift of at most 28 // 8 = 3 px: the column means are the ramp moved by <= 3
    shift = int(np.argmin([float((x[0, :, 3:-3] - plain[0, :, 3 + d : 25 + d]).abs().max()) for d in range(-3, 4)]))
    assert float((x[0, :, 3:-3] - plain[0, :, shift : shift + 22]).abs().max()) < 1e-4


def test_strong_view_has_a_cutout_and_differs_from_the_weak_one() -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8))
    torch.manual_seed(0)
    strong, weak = strong_transform(MNIST)(img), weak_transform(MNIST)(img)
    assert int((strong == 0).sum()) >= 3 * 14 * 14  # the S/2 square set to the mean
    assert int((weak == 0).sum()) < 3 * 14 * 14

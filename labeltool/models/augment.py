"""Training augmentations of a backbone's input: a weak view (the supervised one, and the view
consistency training reads its pseudo-labels from) and a strong view (the one it trains on).

Both take a PIL RGB image and give a normalised float ``[3, S, S]`` with the backbone's
mean/std, like :func:`labeltool.models.backbones.make_preprocess`.

- Weak, small native-size networks (``spec.input_size <= 64``): resize to S x S, pad by S/8
  (reflect), random S x S crop (a shift of up to S/8 pixels).
- Weak, larger inputs: random resized crop (``crop_scale`` of the area), mild colour jitter.
- Both: a horizontal flip only when ``spec.hflip`` (a mirrored digit is another class).
- Strong: the weak geometry, then RandAugment (2 ops, magnitude 9, on uint8) and a cutout (an
  S/2 x S/2 square erased to the mean after normalisation), as in FixMatch (Sohn et al. 2020).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.transforms import v2 as T

from labeltool.models.backbones import BackboneSpec, SquareCrop

SMALL_INPUT = 64  # input sizes up to this are trained at native size with pad-and-crop shifts
RANDAUGMENT_OPS, RANDAUGMENT_MAGNITUDE = 2, 9


class RandomShift(nn.Module):
    """Pad ``[..., H, W]`` by ``pad`` pixels (reflect) and crop a random ``H x W`` window: a shift
    of up to ``pad`` pixels each way. One index gather per axis (torch's reflect padding is far
    slower on small images)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = int(pad)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        dy, dx = (int(v) - self.pad for v in torch.randint(0, 2 * self.pad + 1, (2,)))
        return x.index_select(-2, _reflect(torch.arange(h) + dy, h)).index_select(-1, _reflect(torch.arange(w) + dx, w))


def _reflect(index: Tensor, n: int) -> Tensor:
    """Indices ``[k]`` folded into ``[0, n)`` by reflection without repeating the edge (numpy's
    ``reflect``): -1 → 1, n → n - 2."""
    period = max(1, 2 * (n - 1))
    index = index.remainder(period)
    return torch.where(index >= n, period - index, index)


def native_size(spec: BackboneSpec) -> T.Compose:
    """PIL RGB image → uint8 ``[3, S, S]`` at the network's size (largest centred square,
    resized): the deterministic start of a small input's views, which a trainer may decode
    once and keep (:func:`weak_from_native`, :func:`strong_from_native` do the rest)."""
    size = spec.input_size
    return T.Compose([T.PILToTensor(), SquareCrop(),
                      T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=True), T.CenterCrop(size)])


def _shift_flip(spec: BackboneSpec) -> list[T.Transform]:
    ops: list[T.Transform] = [RandomShift(max(1, spec.input_size // 8))]
    return [*ops, T.RandomHorizontalFlip()] if spec.hflip else ops


def weak_from_native(spec: BackboneSpec) -> T.Compose:
    """uint8 ``[3, S, S]`` (from :func:`native_size`) → the weak view, normalised float."""
    return T.Compose([*_shift_flip(spec), *_to_float(spec)])


def strong_from_native(spec: BackboneSpec) -> T.Compose:
    """uint8 ``[3, S, S]`` (from :func:`native_size`) → the strong view, normalised float."""
    return T.Compose([*_shift_flip(spec), *_strong_tail(spec)])


def plain_from_native(spec: BackboneSpec) -> T.Compose:
    """uint8 ``[3, S, S]`` (from :func:`native_size`) → normalised float, unaugmented."""
    return T.Compose(_to_float(spec))


def _strong_tail(spec: BackboneSpec) -> list[T.Transform]:
    return [T.RandAugment(num_ops=RANDAUGMENT_OPS, magnitude=RANDAUGMENT_MAGNITUDE), *_to_float(spec),
            T.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0.0)]


def _geometry(spec: BackboneSpec, crop_scale: tuple[float, float]) -> list[T.Transform]:
    """uint8 ``[3, H, W]`` → uint8 ``[3, S, S]``: the random crop (and flip) of the weak view."""
    size = spec.input_size
    if size <= SMALL_INPUT:
        return [*native_size(spec).transforms[1:], *_shift_flip(spec)]
    ops: list[T.Transform] = [T.RandomResizedCrop(size, scale=crop_scale, interpolation=T.InterpolationMode.BICUBIC,
                                                  antialias=True)]
    if spec.hflip:
        ops.append(T.RandomHorizontalFlip())
    return ops


def _to_float(spec: BackboneSpec) -> list[T.Transform]:
    return [T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(spec.mean), std=list(spec.std))]


def weak_transform(spec: BackboneSpec, crop_scale: tuple[float, float] = (0.6, 1.0)) -> T.Compose:
    """PIL RGB image → weakly augmented normalised ``[3, S, S]`` (see the module docstring)."""
    ops: list[T.Transform] = [T.PILToTensor(), *_geometry(spec, crop_scale)]
    if spec.input_size > SMALL_INPUT:
        ops.append(T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
    return T.Compose([*ops, *_to_float(spec)])


def strong_transform(spec: BackboneSpec, crop_scale: tuple[float, float] = (0.6, 1.0)) -> T.Compose:
    """PIL RGB image → strongly augmented normalised ``[3, S, S]``: the weak geometry,
    RandAugment(2, 9) on uint8, then a cutout of an S/2 square (set to 0, the mean)."""
    return T.Compose([T.PILToTensor(), *_geometry(spec, crop_scale), *_strong_tail(spec)])

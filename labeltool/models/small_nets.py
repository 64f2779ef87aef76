"""The seed papers' small networks, trained from random initialisation (registered as
backbones in :mod:`labeltool.models.backbones`: ``hoffer_mnist``, ``hoffer_cifar``, ``assoc_mnist``).

They read images at their native size (28 px digits, 32 px colour images; no upscaling to
224) and only make sense trained end to end (``TrainConfig(mode="finetune")`` with
``stages="all"``): their frozen features are those of a random network. Each body is a
``stages`` list of ``nn.Sequential`` blocks (:func:`labeltool.models.stages.backbone_stages`
reads it), input side first, and ends in a pooled vector ``[B, D]``.

A grayscale network (``spec.grayscale``) takes the usual ``[B, 3, S, S]`` batch and reads the
mean of its channels, so preprocessing, export and the app's image pipeline stay RGB; a
grayscale file decoded to RGB has three equal channels, whose mean is the original pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class StagedBody(nn.Module):
    """``stages`` applied in order to ``[B, C, S, S]`` (channel-mean first when ``grayscale``),
    then ``pool`` to features ``[B, D]``."""

    def __init__(self, stages: Sequence[nn.Module], pool: nn.Module, grayscale: bool) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.pool = pool
        self.grayscale = grayscale

    def forward(self, x: Tensor) -> Tensor:
        if self.grayscale:
            x = x.mean(dim=1, keepdim=True)
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)


def _conv_relu_bn(c_in: int, c_out: int, k: int, pad: int, pool: bool = False) -> list[nn.Module]:
    """conv(k x k) → [max-pool 2] → ReLU → BatchNorm, the order of the Hoffer & Ailon models."""
    mods: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, padding=pad)]
    if pool:
        mods.append(nn.MaxPool2d(2))
    return [*mods, nn.ReLU(inplace=True), nn.BatchNorm2d(c_out)]


def _conv_elu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ELU(inplace=True)]


def _flat_pool() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def hoffer_mnist() -> StagedBody:
    """Hoffer & Ailon's MNIST model as the authors released it: 5x5 conv 16 (padding 1) →
    max-pool 2 → 3x3 conv 32 → 3x3 conv 64 → 3x3 conv 64 → max-pool 2 → 3x3 conv 128, each
    conv followed by ReLU and BatchNorm (pooling between conv and ReLU), then a 6x6 average
    pool to 128-d. Shapes at 28 px: 26 → 13 → 13 → 13 → 6 → 6 → 1.

    Choices: the final average pool is adaptive (the same 6x6 window at 28 px, and any other
    input size works); the released model feeds ``(x - 128) / 128``, here the MNIST mean/std
    normalisation of the spec."""
    stages = [
        nn.Sequential(*_conv_relu_bn(1, 16, 5, 1, pool=True)),
        nn.Sequential(*_conv_relu_bn(16, 32, 3, 1), *_conv_relu_bn(32, 64, 3, 1)),
        nn.Sequential(*_conv_relu_bn(64, 64, 3, 1, pool=True)),
        nn.Sequential(*_conv_relu_bn(64, 128, 3, 1)),
    ]
    return StagedBody(stages, _flat_pool(), grayscale=True)


def hoffer_cifar() -> StagedBody:
    """A CIFAR-10 network in the style of Hoffer & Ailon's models: three blocks of 3x3 conv
    (64, 64 | 128, 128 | 192 maps, padding 1) each conv followed by ReLU and BatchNorm,
    max-pool 2 after the first two blocks, a 1x1 conv 192, and a global average pool to 192-d.
    Shapes at 32 px: 32 → 16 → 8 → 8 → 1.

    Choices: the paper's appendix lists its CIFAR-10 layers but its released code has only the
    MNIST model; the map counts (64/128/192) and the global pool are this implementation's, sized
    so one CPU core trains it at a few hundred images per second."""
    stages = [
        nn.Sequential(*_conv_relu_bn(3, 64, 3, 1), *_conv_relu_bn(64, 64, 3, 1), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_relu_bn(64, 128, 3, 1), *_conv_relu_bn(128, 128, 3, 1), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_relu_bn(128, 192, 3, 1), *_conv_relu_bn(192, 192, 1, 0)),
    ]
    return StagedBody(stages, _flat_pool(), grayscale=False)


def assoc_mnist(input_size: int = 28, dim: int = 128) -> StagedBody:
    """The association papers' MNIST network: C(32,3) → C(32,3) → P(2) → C(64,3) → C(64,3) →
    P(2) → C(128,3) → C(128,3) → P(2) → FC(128), ELU after every conv, no BatchNorm. Shapes at
    28 px: 28 → 14 → 7 → 3, so the FC reads 128 x 3 x 3.

    Choices: 'same' padding (1) on every conv and 2x2 max-pooling with stride 2 (floor, so
    7 → 3); no activation after the FC (the embedding is linear, as the loss reads it). The
    papers' L2 weight decay of 1e-3 is in ``spec.extra["weight_decay"]`` for the caller's
    optimiser (``FinetuneConfig.weight_decay``)."""
    stages = [
        nn.Sequential(*_conv_elu(1, 32), *_conv_elu(32, 32), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_elu(32, 64), *_conv_elu(64, 64), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_elu(64, 128), *_conv_elu(128, 128), nn.MaxPool2d(2)),
    ]
    size = input_size // 8
    pool = nn.Sequential(nn.Flatten(), nn.Linear(128 * size * size, dim))
    return StagedBody(stages, pool, grayscale=True)

"""The from-scratch networks: shapes at their native size, stages, seeded weights, grayscale."""

from __future__ import annotations

import pytest
import torch

from labeltool.models.backbones import create_backbone, from_scratch_backbones, get_spec
from labeltool.models.stages import backbone_stages, unfreeze_last_stages

NETS = from_scratch_backbones()


def test_the_papers_networks_are_registered() -> None:
    assert set(NETS) == {"hoffer_mnist", "hoffer_cifar", "assoc_mnist"}
    assert all(not get_spec(n).pretrained for n in NETS)
    assert get_spec("hoffer_mnist").grayscale and not get_spec("hoffer_mnist").hflip
    assert get_spec("assoc_mnist").extra["weight_decay"] == 1e-3
    for name in NETS:
        spec = get_spec(name)
        assert spec.package is None and spec.description and spec.license and spec.arch == name
        assert spec.input_size in (28, 32) and spec.feature_dim > 0 and len(spec.mean) == len(spec.std) == 3
        assert spec.to_json()["pretrained"] is False


@pytest.mark.parametrize("name", NETS)
def test_native_size_forward_and_stages(name: str) -> None:
    net = create_backbone(name)
    spec = net.spec
    x = torch.randn(4, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (4, spec.feature_dim)
    stages = backbone_stages(net)
    assert len(stages) >= 3
    trainable = unfreeze_last_stages(net, "all")
    assert set(trainable) == {n for n, _ in net.named_parameters()}  # the pooling/FC trains with the last stage
    with torch.no_grad():
        same = create_backbone(name)(x)
    torch.testing.assert_close(y, same)  # seeded initialisation: cached features stay valid


@pytest.mark.parametrize("name", ["hoffer_mnist", "assoc_mnist"])
def test_grayscale_networks_read_the_channel_mean(name: str) -> None:
    net = create_backbone(name)
    s = net.spec.input_size
    gray = torch.randn(2, 1, s, s)
    with torch.no_grad():
        a = net(gray.expand(-1, 3, -1, -1))
        b = net(torch.cat([gray * 3, gray * 0, gray * 0], dim=1))  # same channel mean
    torch.testing.assert_close(a, b)

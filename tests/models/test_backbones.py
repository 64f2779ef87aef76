"""Backbone registry, the explicit key mapping, and proof that the bundled weights are pretrained."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeltool.models.backbones import (
    DEFAULT_BACKBONE,
    _load_state,
    create_backbone,
    get_spec,
    is_installed,
    list_backbones,
    make_preprocess,
    register_backbone,
    rgb_triple,
    weights_path,
)
from labeltool.models.keys import block_layout, efficientnet_pytorch_to_timm

# ImageNet-1k indices of the domestic cat classes: tabby, tiger cat, Persian, Siamese, Egyptian cat
CAT_CLASSES = {281, 282, 283, 284, 285}


def _chelsea() -> Image.Image:
    from skimage import data  # scikit-image ships this CC0 photo of a cat

    return Image.fromarray(data.chelsea())


def _require_installed(name: str) -> None:
    """Skip (fail under CI) when the weights package of backbone ``name`` is missing."""
    if is_installed(name):
        return
    spec = get_spec(name)
    why = f"weights package {spec.package!r} of backbone {name!r} is not installed ({spec.install_hint})"
    if os.environ.get("CI"):  # the README's test command installs every one: missing is a broken install
        pytest.fail(why)
    pytest.skip(why)


PRETRAINED = [n for n in list_backbones() if get_spec(n).pretrained]  # the from-scratch ones: test_small_nets.py


def test_the_registry_lists_the_bundled_backbones() -> None:
    assert {"efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2"} <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())


@pytest.mark.parametrize("name", PRETRAINED)
def test_registered_spec_is_complete(name: str) -> None:
    spec = get_spec(name)
    assert spec.name == name and spec.description and spec.license and spec.arch
    assert spec.package and spec.weights_file and spec.package.replace("_", "-") in spec.install_hint.replace("_", "-")
    assert len(spec.mean) == len(spec.std) == 3 and all(s > 0 for s in spec.std)
    assert spec.feature_dim > 0 and 16 <= spec.input_size <= 1024
    small = get_spec(name, image_size=32)
    assert small.input_size == 32 and small.cache_key() != spec.cache_key()
    assert small.to_json()["name"] == name


@pytest.mark.parametrize("name", PRETRAINED)
def test_registered_backbone_gives_features_of_its_dimension(name: str) -> None:
    _require_installed(name)
    assert weights_path(get_spec(name)).is_file()
    bb = create_backbone(name, image_size=64)
    assert not bb.training
    with torch.inference_mode():
        feats = bb(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, bb.spec.feature_dim) and bool(torch.isfinite(feats).all())
    with pytest.raises(RuntimeError, match="without its classifier"):
        bb.classify(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize("name", PRETRAINED)
def test_bundled_weights_rank_a_cat_first_on_a_cat_photo(name: str) -> None:
    _require_installed(name)
    bb = create_backbone(name, with_classifier=True)
    x = make_preprocess(bb.spec)(_chelsea()).unsqueeze(0)
    with torch.inference_mode():
        probs = bb.classify(x).softmax(1)[0]
        feats = bb(x)
    assert int(probs.argmax()) in CAT_CLASSES
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.5
    assert feats.shape == (1, bb.spec.feature_dim)


def test_default_backbone_is_installed_and_offline() -> None:
    assert DEFAULT_BACKBONE in list_backbones()
    assert is_installed(DEFAULT_BACKBONE)
    assert weights_path(get_spec(DEFAULT_BACKBONE)).is_file()


def test_key_mapping_is_complete_one_to_one_and_shape_preserving() -> None:
    import timm

    spec = get_spec("efficientnet_lite0")
    raw = _load_state(weights_path(spec))
    mapped = efficientnet_pytorch_to_timm(raw, "tf_efficientnet_lite0")
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert set(mapped) == set(target)
    assert len(mapped) == len(raw)
    for k, v in mapped.items():
        assert v.shape == target[k].shape, k
    # spot checks of the naming rules
    assert torch.equal(mapped["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(mapped["classifier.weight"], raw["_fc.weight"])
    assert torch.equal(mapped["blocks.0.0.conv_dw.weight"], raw["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(mapped["blocks.1.0.conv_pwl.weight"], raw["_blocks.1._project_conv.weight"])
    assert block_layout("tf_efficientnet_lite0")[:3] == [(0, 0), (1, 0), (1, 1)]


def test_key_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="cannot map"):
        efficientnet_pytorch_to_timm({"_mystery.weight": torch.zeros(1)}, "tf_efficientnet_lite0")


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        get_spec("resnet9000")


def test_timm_backbone_needs_a_local_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        get_spec("timm:resnet18")
    with pytest.raises(FileNotFoundError):
        get_spec("timm:resnet18", checkpoint=str(tmp_path / "missing.pth"))


def test_timm_architecture_with_local_checkpoint(tmp_path: Path) -> None:
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=7)
    ckpt = tmp_path / "r18.pth"
    torch.save(model.state_dict(), ckpt)
    bb = create_backbone("timm:resnet18", checkpoint=str(ckpt), image_size=32, with_classifier=True)
    assert bb.spec.feature_dim == 512
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert bb(x).shape == (2, 512)
        expected = model.eval()(x)
        assert torch.allclose(bb.classify(x), expected, atol=1e-5)


def test_preprocess_resizes_crops_and_normalises() -> None:
    spec = get_spec("efficientnet_lite0", image_size=32)
    img = Image.fromarray(np.full((20, 40, 3), 255, dtype=np.uint8))
    x = make_preprocess(spec)(img)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x, torch.ones_like(x), atol=1e-3)  # white → (1 - 0.5) / 0.5


def test_image_size_is_validated() -> None:
    with pytest.raises(ValueError, match="image_size"):
        get_spec("efficientnet_lite0", image_size=4)


def test_extreme_aspect_ratio_is_cropped_before_resizing() -> None:
    spec = get_spec("efficientnet_lite0", image_size=64)
    wide = np.zeros((1, 20000, 3), dtype=np.uint8)
    wide[0, 9999:10001] = 255  # the centre of the strip is white
    x = make_preprocess(spec)(Image.fromarray(wide))
    assert x.shape == (3, 64, 64)
    assert float(x.max()) > 0.9  # the centred square (1 x 1 pixel at the white centre) survived


def test_a_backbone_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_backbone(get_spec(DEFAULT_BACKBONE))(lambda spec, with_classifier: create_backbone())


def test_rgb_triple_keeps_three_values_and_rejects_others() -> None:
    assert rgb_triple([0.5, 0.25, 0.125]) == (0.5, 0.25, 0.125)
    for bad in ([0.5, 0.5], [0.5] * 4):
        with pytest.raises(ValueError, match="3 per-channel values"):
            rgb_triple(bad)

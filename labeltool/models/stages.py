"""Stages of a backbone, and freezing all but the last N of them for fine-tuning."""

from __future__ import annotations

import re

from torch import nn


def backbone_stages(backbone: nn.Module) -> list[list[nn.Module]]:
    """The backbone's stages, input side first, each a list of modules.

    timm models: the entries of ``blocks``/``stages``/``layers`` (or ``layer1..N``); the stem
    joins the first stage and the final conv/norm the last (the unused ImageNet classifier joins
    none). MobileNetV2 ``features``: inverted-residual blocks grouped by output width.
    """
    body = getattr(backbone, "body", backbone)
    model = getattr(body, "model", None)
    if isinstance(model, nn.Module):
        return _timm_stages(model)
    staged = getattr(body, "stages", None)
    if isinstance(staged, nn.ModuleList) and len(staged):
        blocks: list[list[nn.Module]] = [[m] for m in staged]
        pool = getattr(body, "pool", None)
        if isinstance(pool, nn.Module):
            blocks[-1].append(pool)
        return blocks
    features = getattr(body, "features", None)
    if isinstance(features, nn.Sequential) and len(features) >= 3:
        mods = list(features)
        groups: list[list[nn.Module]] = []
        prev = object()
        for m in mods[1:-1]:
            width = getattr(m, "out_channels", None)
            if groups and width is not None and width == prev:
                groups[-1].append(m)
            else:
                groups.append([m])
            prev = width
        groups[0].insert(0, mods[0])
        groups[-1].append(mods[-1])
        return groups
    raise ValueError(f"cannot find the stages of {type(body).__name__}; use stages='all'")


def _timm_stages(model: nn.Module) -> list[list[nn.Module]]:
    children = list(model.named_children())
    get_cls = getattr(model, "get_classifier", None)
    classifier = get_cls() if callable(get_cls) else None
    names: list[str] = []
    stages: list[list[nn.Module]] = []
    for attr in ("blocks", "stages", "layers"):
        seq = getattr(model, attr, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
            names, stages = [attr], [[m] for m in seq]
            break
    else:
        names = [n for n, _ in children if re.fullmatch(r"layer\d+", n)]
        stages = [[getattr(model, n)] for n in names]
    if not stages:
        raise ValueError(f"cannot find the stages of timm {type(model).__name__}; use stages='all'")
    pos = [i for i, (n, _) in enumerate(children) if n in names]
    stages[0] = [m for _, m in children[: pos[0]]] + stages[0]
    stages[-1] = stages[-1] + [m for _, m in children[pos[-1] + 1 :] if m is not classifier]
    return stages


def unfreeze_last_stages(backbone: nn.Module, n: int | str) -> list[str]:
    """Make only the last ``n`` stages trainable (0 or ``"all"``: every stage); returns the names
    of the trainable parameters. See :func:`set_train_mode` for the BatchNorm rule."""
    stages = backbone_stages(backbone)
    count = 0 if isinstance(n, str) and n.lower() == "all" else int(n)
    if count < 0 or count > len(stages):
        raise ValueError(f"the backbone has {len(stages)} stages; cannot unfreeze the last {n}")
    count = count or len(stages)
    backbone.requires_grad_(False)
    for group in stages[-count:]:
        for m in group:
            m.requires_grad_(True)
    return [name for name, p in backbone.named_parameters() if p.requires_grad]


def set_train_mode(backbone: nn.Module) -> None:
    """Training mode for the trainable parts only: every module whose parameters are all frozen
    (BatchNorm included) stays in eval mode, so its running statistics never change."""
    backbone.train()
    for m in backbone.modules():
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()

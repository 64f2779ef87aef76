"""Adam(W) moments saved by parameter name, so that a continued round resumes its optimizer.

Why it matters: a fresh Adam normalises each parameter's step by the gradients it has seen so
far. A head continued from a round that had already fit its labels sees tiny gradients, and a
fresh optimizer turns them into full learning-rate steps along whatever direction lowers the
loss further (for W-Softmax: growing embedding norms and class weights drifting together, which
collapsed accuracy from 98% to 14% over eight continued rounds). Restored moments keep the step
sizes the last round ended with.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

MOMENT_KEYS = ("step", "exp_avg", "exp_avg_sq")


def named_trainables(*modules: tuple[str, nn.Module]) -> list[tuple[str, nn.Parameter]]:
    """``(prefix.name, parameter)`` for every parameter that requires a gradient in the
    ``(prefix, module)`` pairs (frozen backbone stages are left out)."""
    return [(f"{prefix}.{name}", p) for prefix, module in modules for name, p in module.named_parameters()
            if p.requires_grad]


def adam_moments(opt: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]]) -> dict[str, Tensor]:
    """The optimizer's per-parameter state as CPU tensors keyed ``"<param name>.<step|exp_avg|exp_avg_sq>"``
    (``step`` is ``[1]``, the moments have the parameter's shape); parameters never stepped are left out."""
    out: dict[str, Tensor] = {}
    for name, p in named:
        state = opt.state.get(p, {})
        if not all(k in state for k in MOMENT_KEYS):
            continue
        out[f"{name}.step"] = torch.as_tensor(state["step"], dtype=torch.float32).detach().reshape(1).cpu()
        for k in ("exp_avg", "exp_avg_sq"):
            out[f"{name}.{k}"] = state[k].detach().float().cpu().clone()
    return out


def restore_adam_moments(
    opt: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]], moments: Mapping[str, Tensor],
) -> bool:
    """Load ``moments`` (from :func:`adam_moments`) into the freshly built ``opt``; all or nothing.

    ``named`` must be exactly the parameters ``opt`` holds (in any order, over any number of
    parameter groups). Returns False, leaving ``opt`` untouched, when any parameter has no saved
    moments or a different shape (the head, loss or set of trained stages changed). The learning
    rates and weight decay stay ``opt``'s own, so a changed configuration takes effect.
    """
    held = [p for group in opt.param_groups for p in group["params"]]  # state_dict's index order
    index = {id(p): i for i, p in enumerate(held)}
    if len(held) != len(named) or any(id(p) not in index for _, p in named):
        return False
    state: dict[int, dict[str, Tensor]] = {}
    for name, p in named:
        keys = [f"{name}.{k}" for k in MOMENT_KEYS]
        if not all(k in moments for k in keys):
            return False
        step, avg, avg_sq = (moments[k] for k in keys)
        if avg.shape != p.shape or avg_sq.shape != p.shape or step.numel() != 1:
            return False
        state[index[id(p)]] = {"step": step.reshape(()).float(), "exp_avg": avg.to(p.dtype),
                               "exp_avg_sq": avg_sq.to(p.dtype)}
    # state_dict's own loader moves each tensor to its parameter's device and dtype policy
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return True

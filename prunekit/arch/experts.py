"""Mixture-of-experts layers as one Linear pair per expert, while one-shot pruning works on them.

transformers 5 keeps a block's experts fused (Mixtral, Qwen2-MoE, Qwen3-MoE): ``gate_up_proj`` of shape
(experts, 2·ffn, hidden) and ``down_proj`` of shape (experts, hidden, ffn). Calibration records each
Linear's inputs, so inside :func:`unfused_experts` every such module is swapped for an equivalent one
whose experts are Linears (``<experts>.gate_up_proj.<e>``, ``<experts>.down_proj.<e>``) computing exactly
what the fused loop does: each expert is then calibrated on the tokens the router sends it. On exit
the (pruned) weights are written back into the fused tensors and the original module returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

FUSED = ("gate_up_proj", "down_proj")


def is_fused_experts(module: nn.Module) -> bool:
    """The plain fused layout: 3-D gate_up_proj/down_proj, no biases, an activation and an expert count."""
    params = dict(module.named_parameters(recurse=False))
    if set(params) != set(FUSED) or not hasattr(module, "act_fn") or not isinstance(
            getattr(module, "num_experts", None), int):
        return False
    up, down = params["gate_up_proj"], params["down_proj"]
    return (up.dim() == down.dim() == 3 and up.shape[0] == down.shape[0] == module.num_experts
            and up.shape[1] == 2 * down.shape[2] and up.shape[2] == down.shape[1])


class ExpertLinears(nn.Module):
    """A fused experts module as ``gate_up_proj[e]`` / ``down_proj[e]`` Linears, with the same forward."""

    def __init__(self, fused: nn.Module) -> None:
        super().__init__()
        self.num_experts = fused.num_experts
        self.act_fn = fused.act_fn
        for name in FUSED:
            weight = getattr(fused, name).detach()
            linears = nn.ModuleList()
            for e in range(self.num_experts):
                lin = nn.Linear(weight.shape[2], weight.shape[1], bias=False, device="meta")
                lin.weight = nn.Parameter(weight[e].clone())
                linears.append(lin)
            setattr(self, name, linears)

    def forward(self, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor) -> Tensor:
        out = torch.zeros_like(hidden_states)
        for e in range(self.num_experts):
            token_idx, top_k_pos = torch.where(top_k_index == e)
            if not len(token_idx):
                continue
            gate, up = self.gate_up_proj[e](hidden_states[token_idx]).chunk(2, dim=-1)
            y = self.down_proj[e](self.act_fn(gate) * up) * top_k_weights[token_idx, top_k_pos, None]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out

    @torch.no_grad()
    def write_back(self, fused: nn.Module) -> None:
        for name in FUSED:
            target = getattr(fused, name)
            for e, lin in enumerate(getattr(self, name)):
                target[e].copy_(lin.weight.to(target.device))


def has_fused_experts(model: nn.Module) -> bool:
    return any(is_fused_experts(m) for m in model.modules())


@contextmanager
def unfused_experts(model: nn.Module) -> Iterator[None]:
    """Within the block every fused experts module of ``model`` is an :class:`ExpertLinears`."""
    swaps = []
    for name, module in list(model.named_modules()):
        if is_fused_experts(module):
            parent_name, _, attr = name.rpartition(".")
            swaps.append((model.get_submodule(parent_name) if parent_name else model, attr, module))
    views = []
    try:
        for parent, attr, fused in swaps:
            view = ExpertLinears(fused).to(fused.gate_up_proj.device)
            setattr(parent, attr, view)
            views.append(view)
        yield
    finally:
        for (parent, attr, fused), view in zip(swaps, views, strict=False):
            view.write_back(fused)
            setattr(parent, attr, fused.to(next(view.parameters()).device))


def fold_expert_names(per_linear: Mapping[str, float], model: nn.Module) -> dict[str, float]:
    """Per-Linear values keyed ``<experts>.<fused>.<e>`` folded onto the fused parameter's name (their mean),
    so they name something the restored model has (``model.get_parameter``)."""
    fused = {f"{n}.{p}" for n, m in model.named_modules() if is_fused_experts(m) for p in FUSED}
    out: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, value in per_linear.items():
        owner, _, index = name.rpartition(".")
        key = owner if owner in fused and index.isdigit() else name
        out[key] = out.get(key, 0.0) + value
        counts[key] = counts.get(key, 0) + 1
    return {k: v / counts[k] for k, v in out.items()}

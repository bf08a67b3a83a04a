"""A structured plan (what to keep), checked whole before anything changes, and applied."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from prunekit.arch.sites import (
    attn_site,
    check_hidden_covered,
    ffn_site,
    hidden_sites,
    num_layers,
)
from prunekit.errors import PrunekitError
from prunekit.prune.structured.remove import check_heads, remove_ffn, remove_heads, remove_hidden
from prunekit.prune.structured.shapes import sync_config
from prunekit.prune.surgery import as_index, check_layers_kept, remove_layers


@dataclass
class StructuredPlan:
    """What to keep, in original indices. Missing entries mean "keep everything"."""

    heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> kept query heads
    ffn: dict[int, list[int]] = field(default_factory=dict)  # layer -> kept FFN neurons
    layers: list[int] | None = None  # kept layers
    hidden: list[int] | None = None  # kept hidden dims

    def to_dict(self) -> dict[str, Any]:
        return {"heads": {str(k): v for k, v in self.heads.items()}, "ffn": {str(k): v for k, v in self.ffn.items()},
                "layers": self.layers, "hidden": self.hidden}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StructuredPlan:
        return cls({int(k): list(v) for k, v in (d.get("heads") or {}).items()},
                   {int(k): list(v) for k, v in (d.get("ffn") or {}).items()}, d.get("layers"), d.get("hidden"))


@dataclass
class CheckedPlan:
    """A plan as index tensors, validated against the model (heads: kept query heads and their kv heads)."""

    heads: dict[int, tuple[Tensor, Tensor]]
    ffn: dict[int, Tensor]
    layers: Tensor | None
    hidden: Tensor | None


def checked_plan(model: nn.Module, plan: StructuredPlan) -> CheckedPlan:
    """Validate the whole plan before anything changes, so a bad plan leaves the model untouched."""
    n = num_layers(model)
    if plan.layers is not None:
        check_layers_kept(model, plan.layers, n)
    layers = as_index(plan.layers, n, "layers") if plan.layers is not None else None
    kept = set(layers.tolist()) if layers is not None else set(range(n))
    heads, ffn = {}, {}
    for layer, keep in sorted(plan.heads.items()):
        if layer not in range(n):
            raise PrunekitError(f"plan names layer {layer} but the model has {n} layers")
        if layer in kept:
            _, k, kv = check_heads(model, layer, keep)
            heads[layer] = (k, kv)
    for layer, keep in sorted(plan.ffn.items()):
        if layer not in range(n):
            raise PrunekitError(f"plan names layer {layer} but the model has {n} layers")
        if layer in kept:
            ffn[layer] = as_index(keep, ffn_site(model, layer).width, f"layer {layer}: FFN neurons")
    hidden = None
    if plan.hidden is not None:
        sites = hidden_sites(model)
        hidden = as_index(plan.hidden, sites.size, "hidden dims")
        check_hidden_covered(model, sites)
    return CheckedPlan(heads, ffn, layers, hidden)


def apply_plan(model: nn.Module, plan: StructuredPlan) -> nn.Module:
    """Physically remove everything the plan does not keep (in place); returns the model."""
    c = checked_plan(model, plan)
    for layer, (keep, kv) in c.heads.items():
        remove_heads(attn_site(model, layer), keep, kv)
    for layer, keep in c.ffn.items():
        remove_ffn(ffn_site(model, layer), keep)
    if c.hidden is not None:
        remove_hidden(model, hidden_sites(model), c.hidden)
    if c.layers is not None:
        remove_layers(model, c.layers)
    sync_config(model)
    return model

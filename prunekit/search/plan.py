"""The plan file: per-layer ratios and widths, with the budget and the scores that chose them.

``prunekit search`` writes it; ``prunekit prune --plan FILE`` applies it (classifiers: structured
widths through the same recovery loop; LMs: per-block sparsity through
``OneShotSettings(block_ratios=...)``). The file names the architecture it was searched on, and
applying it to another one is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.io.documents import read_yaml
from prunekit.prune.structured import model_shapes
from prunekit.search.budget import Unit

PLAN_VERSION = 1


def architecture(model: nn.Module) -> dict[str, Any]:
    """What a plan must match: family, layer count and per-layer head counts and FFN widths."""
    sh = model_shapes(model)
    return {"model_type": sh["model_type"], "num_layers": sh["num_layers"], "hidden_size": sh["hidden_size"],
            "q_heads": [x["q_heads"] for x in sh["layers"]], "ffn": [x["ffn"] for x in sh["layers"]]}


def make_plan(model: nn.Module, units: Sequence[Unit], ratios: Sequence[float], *, granularity: str,
              budget: Mapping[str, Any], scores: Mapping[str, Any], search: Mapping[str, Any],
              importance: str | None = None, method: str | None = None,
              parts: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """The plan as a plain dict (what :func:`write_plan` saves)."""
    plan: dict[str, Any] = {"prunekit_plan": PLAN_VERSION, "granularity": granularity,
                            "architecture": architecture(model)}
    if granularity == "unstructured":
        plan["block_sparsity"] = [round(float(r), 4) for u, r in zip(units, ratios, strict=True)]
        if parts:  # attention and MLP pruned apart; block_sparsity stays their param-weighted total
            plan["sublayer_sparsity"] = {k: [round(float(r), 4) for r in v] for k, v in parts.items()}
        if method:
            plan["method"] = method
    else:
        heads, ffn, widths = {}, {}, {}
        for u, r in zip(units, ratios, strict=True):
            if u.kind == "heads":
                heads[u.layer] = round(float(r), 4)
                widths.setdefault(u.layer, {})["heads_kept"] = u.count - round(r * u.count)
            elif u.kind == "ffn":
                ffn[u.layer] = round(float(r), 4)
                widths.setdefault(u.layer, {})["ffn_kept"] = u.count - round(r * u.count)
        plan["heads"] = heads
        plan["ffn"] = ffn
        plan["widths"] = widths
        if importance:
            plan["importance"] = importance
    plan["budget"] = dict(budget)
    plan["scores"] = dict(scores)
    plan["search"] = dict(search)
    return plan


def write_plan(path: str | Path, plan: Mapping[str, Any]) -> None:
    Path(path).write_text(yaml.safe_dump(_plain(plan), sort_keys=False, default_flow_style=None))


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item"):
        return x.item()
    return x


def read_plan(path: str | Path) -> dict[str, Any]:
    plan = read_yaml(path, "plan file")
    if not isinstance(plan, dict) or "prunekit_plan" not in plan:
        raise PrunekitError(f"{path} is not a prunekit plan (no 'prunekit_plan' key); write one with prunekit search")
    if plan.get("granularity") not in ("structured", "unstructured"):
        raise PrunekitError(f"plan {path}: granularity must be structured or unstructured, got "
                            f"{plan.get('granularity')!r}")
    return plan


def check_plan(plan: Mapping[str, Any], model: nn.Module, where: str = "plan") -> None:
    """Refuse a plan searched on another architecture, or one naming a layer the model lacks."""
    want = plan.get("architecture") or {}
    have = architecture(model)
    n = have["num_layers"]
    if want.get("model_type") not in (None, have["model_type"]):
        raise PrunekitError(f"{where} was made for a {want['model_type']} model, not this {have['model_type']} one")
    layer_keys = [int(k) for key in ("heads", "ffn") for k in (plan.get(key) or {})]
    bad = sorted(k for k in layer_keys if not 0 <= k < n)
    if bad:
        raise PrunekitError(f"{where} names layer {bad[0]}, which does not exist (the model has {n} layers, 0–{n - 1})")
    blocks = plan.get("block_sparsity")
    if blocks is not None and len(blocks) != n:
        raise PrunekitError(f"{where} has {len(blocks)} per-block sparsities but the model has {n} blocks")
    for key in ("num_layers", "hidden_size", "q_heads", "ffn"):
        if key in want and want[key] != have[key]:
            raise PrunekitError(f"{where} was searched on another architecture: {key} {want[key]} there, "
                                f"{have[key]} in this model")
    for key in ("heads", "ffn"):
        for k, r in (plan.get(key) or {}).items():
            if not 0 <= float(r) < 1:
                raise PrunekitError(f"{where}: layer {k} {key} ratio {r} is not in [0, 1)")
    for i, r in enumerate(blocks or []):
        if not 0 <= float(r) < 1:
            raise PrunekitError(f"{where}: block {i} sparsity {r} is not in [0, 1)")
    parts = plan.get("sublayer_sparsity")
    if parts is not None:
        if not isinstance(parts, Mapping) or set(parts) != {"attention", "mlp"}:
            raise PrunekitError(f"{where}: sublayer_sparsity must have exactly the keys attention and mlp")
        for key, values in parts.items():
            if len(values) != n or any(not 0 <= float(r) < 1 for r in values):
                raise PrunekitError(f"{where}: sublayer_sparsity {key} must hold {n} sparsities in [0, 1)")


def oneshot_ratios(plan: Mapping[str, Any]) -> tuple[list[float], list[float] | None]:
    """(block_ratios, mlp_ratios) for :class:`~prunekit.prune.oneshot.OneShotSettings` from an LM plan:
    the per-block list, or attention's and MLP's when the plan prunes them apart."""
    parts = plan.get("sublayer_sparsity")
    if parts:
        return [float(r) for r in parts["attention"]], [float(r) for r in parts["mlp"]]
    return [float(r) for r in plan["block_sparsity"]], None


def mean_sparsity(plan: Mapping[str, Any]) -> float:
    """An unstructured plan's overall target: the mean of its per-block sparsities."""
    blocks = [float(r) for r in plan["block_sparsity"]]
    return sum(blocks) / len(blocks)


def structured_ratios(plan: Mapping[str, Any]) -> tuple[dict[int, float], dict[int, float]]:
    """(heads, ffn): removed fraction per layer."""
    return ({int(k): float(v) for k, v in (plan.get("heads") or {}).items()},
            {int(k): float(v) for k, v in (plan.get("ffn") or {}).items()})

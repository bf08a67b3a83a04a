"""What a per-layer plan costs: the searchable units and three cost models (params, MACs, latency).

A *unit* is what one ratio applies to: one layer's attention heads, one layer's FFN neurons, one
whole layer, or one block's weights (unstructured). Budgets are the fraction of the units' dense cost
the pruned model may *keep* (``params=0.5``: at most half of the searched parameters remain); the
embeddings and the head are not searched and not counted.

Latency is not additive in FLOPs on a real CPU, so the latency model is a table measured once on the
target device: each distinct block shape timed alone with its heads / FFN neurons cut to a few kept
fractions, interpolated in between, cached on disk.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.arch import transformer_layers
from prunekit.errors import PrunekitError
from prunekit.importance.groups import group_scores
from prunekit.prune.calibration import sublayer_groups
from prunekit.prune.structured import apply_plan, attn_site, ffn_site, num_layers, plan_from_layer_ratios
from prunekit.report import measure
from prunekit.report.measure import model_device

BUDGET_KINDS = ("params", "macs", "latency")
LATENCY_POINTS = (0.25, 0.5, 0.75, 1.0)  # kept fractions the latency table measures (0 removed = 1.0)


@dataclass(frozen=True)
class Unit:
    """One searchable ratio: ``kind`` heads | ffn | layer | block, in ``layer``, over ``count`` groups."""

    name: str
    kind: str
    layer: int
    count: int  # groups the ratio removes from (heads or kv groups, neurons, 1 layer, weights)
    params: int  # parameters the unit holds (all removed at ratio 1)
    macs: int  # multiply-accumulates per token it costs
    max_ratio: float  # the most that may go (a layer keeps one head / one neuron)

    @property
    def step(self) -> float:
        return 1.0 / self.count

    def snap(self, ratio: float) -> float:
        """The ratio a real cut can have: whole groups (at least one), within ``max_ratio``; 4 decimals."""
        if self.kind != "block":
            ratio = max(1, round(ratio * self.count)) / self.count
        return round(min(ratio, self.max_ratio), 4)


@dataclass
class Budget:
    """``kind=keep``: the pruned units may keep at most ``keep`` of their dense cost."""

    kind: str
    keep: float

    @classmethod
    def parse(cls, text: str) -> Budget:
        kind, sep, value = text.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in BUDGET_KINDS:
            raise PrunekitError(f"--budget must look like params=0.5, macs=0.5 or latency=0.5, got {text!r}")
        try:
            keep = float(value)
        except ValueError:
            raise PrunekitError(f"--budget {text}: {value!r} is not a number") from None
        if not 0.0 < keep < 1.0:
            raise PrunekitError(f"--budget {text}: the kept fraction must be in (0, 1)")
        return cls(kind, keep)

    def __str__(self) -> str:
        return f"{self.kind}={self.keep:g}"


# ----------------------------------------------------------------------------------------------
# Units of a model
# ----------------------------------------------------------------------------------------------


def _numel(modules: Sequence[nn.Module], bias: bool = True) -> int:
    seen, total = set(), 0
    for m in modules:
        if id(m) in seen:
            continue
        seen.add(id(m))
        total += m.weight.numel()
        if bias and getattr(m, "bias", None) is not None:
            total += m.bias.numel()
    return total


def structured_units(model: nn.Module, kinds: Sequence[str] = ("heads", "ffn"), seq_len: int = 128,
                     gqa: str = "groups") -> list[Unit]:
    """Per layer: attention heads (kv groups under GQA with ``gqa="groups"``), FFN neurons, or the whole layer."""
    units = []
    for i in range(num_layers(model)):
        a, f = attn_site(model, i), ffn_site(model, i)
        attn_w = _numel([a.q, a.k, a.v, a.o], bias=False)
        attn_p = attn_w + _numel([a.q, a.k, a.v]) - _numel([a.q, a.k, a.v], bias=False)  # o's bias stays
        attn_macs = attn_w + 2 * seq_len * a.n_q * a.head_dim
        ffn_mods = [m for m in (f.up, f.gate) if m is not None]
        ffn_p = _numel(ffn_mods) + f.down.weight.numel()
        ffn_macs = _numel([*ffn_mods, f.down], bias=False)
        groups = a.n_kv if (a.per_group > 1 and gqa == "groups") else a.n_q
        for kind in kinds:
            if kind == "heads":
                units.append(Unit(f"layer.{i}.heads", "heads", i, groups, attn_p, attn_macs, (groups - 1) / groups))
            elif kind == "ffn":
                units.append(Unit(f"layer.{i}.ffn", "ffn", i, f.width, ffn_p, ffn_macs, (f.width - 1) / f.width))
            elif kind == "layers":
                units.append(Unit(f"layer.{i}", "layer", i, 1, attn_p + ffn_p, attn_macs + ffn_macs, 1.0))
            else:
                raise PrunekitError(f"unknown structured unit kind {kind!r}")
    return units


def block_units(model: nn.Module) -> list[Unit]:
    """Unstructured: one unit per block, its Linear weights (a zero weight costs no parameter / sparse MAC)."""
    _, layers = transformer_layers(model)
    units = []
    for i, block in enumerate(layers):
        names = [n for g in sublayer_groups(model, block) for n in g]
        n = sum(block.get_submodule(name).weight.numel() for name in names)
        units.append(Unit(f"block.{i}", "block", i, n, n, n, 0.99))
    return units


# ----------------------------------------------------------------------------------------------
# Cost models
# ----------------------------------------------------------------------------------------------


class CostModel:
    """Cost removed per unit at a ratio, and the kept fraction of a whole plan."""

    def __init__(self, units: Sequence[Unit], kind: str, latency: dict[str, list[list[float]]] | None = None) -> None:
        if kind not in BUDGET_KINDS:
            raise PrunekitError(f"unknown budget kind {kind!r}; choose {', '.join(BUDGET_KINDS)}")
        if kind == "latency":
            if any(u.kind == "block" for u in units):
                raise PrunekitError("a latency budget needs structured pruning: unstructured zeros do not make "
                                    "dense kernels faster (use params= or macs=)")
            if latency is None:
                raise PrunekitError("internal: a latency budget needs a measured latency table")
        self.units, self.kind, self.latency = list(units), kind, latency
        self.dense = np.array([self.removed(i, 1.0) for i in range(len(self.units))])
        self.total = float(self.dense.sum())

    def removed(self, i: int, ratio: float) -> float:
        u = self.units[i]
        if self.kind == "params":
            return u.params * ratio
        if self.kind == "macs":
            return u.macs * ratio
        table = np.asarray(self.latency[_latency_key(u)], dtype=float)  # rows: kept fraction, ms
        full = float(np.interp(1.0, table[:, 0], table[:, 1]))
        return full - float(np.interp(1.0 - ratio, table[:, 0], table[:, 1]))

    def kept(self, ratios: Sequence[float]) -> float:
        return 1.0 - sum(self.removed(i, r) for i, r in enumerate(ratios)) / self.total

    def check_feasible(self, budget: Budget, max_ratios: Sequence[float] | None = None) -> None:
        caps = max_ratios if max_ratios is not None else [u.max_ratio for u in self.units]
        best = self.kept(caps)
        if best > budget.keep + 1e-9:
            kinds = sorted({u.kind for u in self.units})
            raise PrunekitError(
                f"budget {budget} cannot be met: removing the most the granularity allows ({', '.join(kinds)}: "
                f"every layer keeps at least one group, ratios up to {max(caps):.2f}) still keeps "
                f"{100 * best:.1f} % of the {self.kind}; raise the budget or add a granularity")


# ----------------------------------------------------------------------------------------------
# The latency table
# ----------------------------------------------------------------------------------------------


def _latency_key(u: Unit) -> str:
    return f"{u.kind}:{u.layer}"


def _block_signature(model: nn.Module, layer: int) -> str:
    a, f = attn_site(model, layer), ffn_site(model, layer)
    return f"{type(a.attn).__name__}:{a.n_q}x{a.head_dim}/{a.n_kv}:{type(f.up).__name__}:{f.width}"


def latency_table(model: nn.Module, units: Sequence[Unit], make_inputs: Callable[[int, int], dict[str, Any]], *,
                  cache: Path | None = None, batch: int = 8, seq_len: int = 128,
                  min_seconds: float = 0.3) -> dict[str, list[list[float]]]:
    """Per unit, [[kept fraction, ms], ...]: one block timed alone with its heads or FFN cut to each of
    :data:`LATENCY_POINTS`. Blocks of the same shape are measured once; the table is cached in ``cache``
    (a JSON file keyed by device, threads and block shapes) so a search measures a device once."""
    threads = torch.get_num_threads()
    device = model_device(model)
    sigs = {i: _block_signature(model, i) for i in range(num_layers(model))}
    key_src = json.dumps([str(device), threads, batch, seq_len, model.config.model_type, sorted(set(sigs.values()))])
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    stored: dict[str, Any] = {}
    if cache is not None and cache.is_file():
        stored = json.loads(cache.read_text())
    by_sig: dict[str, list[list[float]]] = dict(stored.get(key, {}))
    captured = _capture_block_inputs(model, make_inputs(batch, seq_len))
    scores = group_scores(model, "l2", layers="groups")
    out: dict[str, list[list[float]]] = {}
    for u in units:
        if u.kind not in ("heads", "ffn"):
            continue
        sig = f"{u.kind}:{sigs[u.layer]}"
        if sig not in by_sig:
            rows = []
            for kept in LATENCY_POINTS:
                ratio = 1.0 - kept
                ratio = min(ratio, u.max_ratio)
                m = copy.deepcopy(model)
                plan = plan_from_layer_ratios(m, scores, **{u.kind: {u.layer: ratio}})
                apply_plan(m, plan)
                block = _blocks(m)[u.layer].eval()
                args, kwargs = captured
                with torch.inference_mode():
                    ms = measure.median_ms(  # looked up when called: a test swaps in a fake timer
                        lambda b=block, a=args, k=kwargs: b(*a, **k), warmup=2, min_seconds=min_seconds)
                rows.append([1.0 - ratio, ms])
                del m
            rows.append([0.0, 0.0])
            rows.sort()
            for j in range(1, len(rows)):  # keeping more never runs faster: timing noise must not say so
                rows[j][1] = max(rows[j][1], rows[j - 1][1])
            by_sig[sig] = rows
        out[_latency_key(u)] = by_sig[sig]
    if cache is not None:
        stored[key] = by_sig
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(stored, indent=1))
        tmp.replace(cache)
    return out


def _blocks(model: nn.Module) -> nn.ModuleList:
    return transformer_layers(model)[1]


def _capture_block_inputs(model: nn.Module, inputs: dict[str, Any]) -> tuple[tuple, dict]:
    """The positional and keyword arguments the first block receives on ``inputs`` (reused for every block)."""
    got: dict[str, Any] = {}

    class _Stop(Exception):
        pass

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        got["args"], got["kwargs"] = args, kwargs
        raise _Stop

    handle = _blocks(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            model(**inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return got["args"], got["kwargs"]


def describe(units: Sequence[Unit]) -> list[dict[str, Any]]:
    return [asdict(u) for u in units]

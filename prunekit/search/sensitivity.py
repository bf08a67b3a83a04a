"""Sensitivity analysis: prune one unit (a layer's heads, FFN neurons, the whole layer, or one block's
weights) at a time at each ratio, and measure the validation metric without retraining.

The table is the search's proxy: the damage of a whole plan is predicted as the sum of its units'
measured damages, interpolated between the measured ratios (additive, as in SparseML's and NNI's
sensitivity-guided pruning). Each measurement is written to a JSON cache as soon as it is taken, so an
interrupted run resumes where it stopped.

A *probe* is the task side: it knows the model, the units and how to measure one plan.
:class:`ClassifierProbe` masks a classifier exactly (zeroed output columns, skipped layers) and
measures validation accuracy; :class:`LMProbe` masks one block with Wanda scores from the dense
model's calibration activations and measures perplexity on a few held-out windows (the proxy), and
measures a whole plan for real by the one-shot prune of ``prunekit prune --task lm``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from prunekit.arch import transformer_layers
from prunekit.errors import PrunekitError
from prunekit.importance.wanda import wanda_scores
from prunekit.prune.calibration import as_rows, sublayer_groups
from prunekit.prune.masks import keep_per_row
from prunekit.prune.oneshot import OneShotSettings, prune_oneshot
from prunekit.prune.structured import num_layers, plan_from_layer_ratios, structured_masks
from prunekit.report.measure import model_device
from prunekit.report.metrics import score_of
from prunekit.search.budget import Unit, block_units, structured_units
from prunekit.tasks.lm import perplexity

GRANULARITIES = ("unstructured", "heads", "ffn", "layers")
DEFAULT_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


def parse_ratios(text: str | Sequence[float]) -> list[float]:
    """``"0.1,0.3,0.5"`` → sorted fractions in (0, 1]."""
    try:
        values = [float(x) for x in (text.split(",") if isinstance(text, str) else text) if str(x).strip()]
    except ValueError:
        raise PrunekitError(f"--ratios must be comma-separated numbers, got {text!r}") from None
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise PrunekitError(f"--ratios must be fractions in (0, 1], got {text!r}")
    return sorted(set(values))


class Probe(Protocol):
    """Measures one plan of per-unit ratios on validation data (no retraining)."""

    metric: str
    higher_is_better: bool
    identity: dict[str, Any]  # what the cache key is made of (model, data, criterion ...)

    def units(self, granularity: str) -> list[Unit]: ...

    def measure(self, ratios: Mapping[str, float]) -> float: ...


@dataclass
class SensitivityTable:
    """Metric per unit and ratio; ``values[unit][f"{ratio:g}"]`` (ratio 0 is the baseline)."""

    granularity: str
    metric: str
    higher_is_better: bool
    baseline: float
    ratios: list[float]
    units: list[str]
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    evaluations: int = 0

    def done(self, unit: str, ratio: float) -> bool:
        return f"{ratio:g}" in self.values.get(unit, {})

    def curve(self, unit: str) -> tuple[np.ndarray, np.ndarray]:
        """(ratios, score deltas vs baseline), 0 at ratio 0; score = :func:`score_of`."""
        pts = sorted((float(r), score_of(self.metric, v)) for r, v in self.values.get(unit, {}).items())
        base = score_of(self.metric, self.baseline)
        xs = np.array([0.0] + [p[0] for p in pts])
        ys = np.array([0.0] + [p[1] - base for p in pts])
        return xs, ys

    def delta(self, unit: str, ratio: float) -> float:
        """Predicted score change of pruning ``unit`` at ``ratio``; never positive: a measured gain from
        pruning is evaluation noise, and summing noise over many units would make the proxy chase it."""
        xs, ys = self.curve(unit)
        ys = np.minimum(ys, 0.0)
        if ratio > xs[-1] + 1e-9:  # beyond the measured range: extend the last slope (no free lunch)
            slope = (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-9) if len(xs) > 1 else 0.0
            return float(ys[-1] + min(slope, 0.0) * (ratio - xs[-1]))
        return float(np.interp(ratio, xs, ys))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SensitivityTable:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)


def cache_key(identity: Mapping[str, Any], granularity: str) -> str:
    src = json.dumps({**identity, "granularity": granularity}, sort_keys=True, default=str)
    return hashlib.sha1(src.encode()).hexdigest()[:16]


def run_sensitivity(
    probe: Probe, granularity: str, ratios: Sequence[float] = DEFAULT_RATIOS, *, cache: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> SensitivityTable:
    """Measure every unit at every ratio (whole layers: removed or not), resuming from ``cache``."""
    if granularity not in GRANULARITIES:
        raise PrunekitError(f"unknown --granularity {granularity!r}; choose {', '.join(GRANULARITIES)}")
    units = probe.units(granularity)
    ratios = [1.0] if granularity == "layers" else parse_ratios(ratios)
    table: SensitivityTable | None = None
    if cache is not None and cache.is_file():
        try:
            table = SensitivityTable.from_dict(json.loads(cache.read_text()))
            if progress:
                progress(f"sensitivity: resuming from {cache} ({sum(len(v) for v in table.values.values())} "
                         "measurements cached)")
        except (json.JSONDecodeError, TypeError, KeyError):
            table = None
    start = time.perf_counter()
    if table is None:
        base = probe.measure({})
        table = SensitivityTable(granularity, probe.metric, probe.higher_is_better, base, [], [u.name for u in units],
                                 identity=dict(probe.identity), evaluations=1)
    table.ratios = sorted(set(table.ratios) | set(ratios))
    table.units = [u.name for u in units]
    todo = list(dict.fromkeys((u, u.snap(r)) for u in units for r in ratios))  # whole groups: no repeats
    todo = [(u, r) for u, r in todo if not table.done(u.name, r)]
    for k, (u, r) in enumerate(todo, start=1):
        table.values.setdefault(u.name, {})[f"{r:g}"] = probe.measure({u.name: r})
        table.evaluations += 1
        table.seconds += time.perf_counter() - start
        start = time.perf_counter()
        if cache is not None:
            table.write(cache)
        if progress and (k == len(todo) or k % max(1, len(todo) // 10) == 0):
            progress(f"sensitivity {granularity}: {k}/{len(todo)} ({u.name} at {r:g}: {probe.metric} "
                     f"{table.values[u.name][f'{r:g}']:.4g}, baseline {table.baseline:.4g})")
    table.seconds += time.perf_counter() - start
    if cache is not None:
        table.write(cache)
    return table


# ----------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------


class ClassifierProbe:
    """Validation accuracy (in %) of a transformer classifier with some units masked.

    Heads, FFN neurons and layers are masked exactly as removal would cut them
    (:func:`prunekit.prune.structured.structured_masks`); within a unit the lowest-scoring groups go,
    by the same group importance ``prunekit prune`` uses. Unstructured: the lowest-|w| weights of each
    Linear in the block (the magnitude criterion, per matrix)."""

    metric, higher_is_better = "accuracy", True

    def __init__(self, model: nn.Module, evaluate: Callable[[nn.Module], float], scores: Any,
                 identity: Mapping[str, Any], gqa: str = "groups") -> None:
        self.model, self._evaluate, self.scores, self.gqa = model, evaluate, scores, gqa
        self.identity = dict(identity)
        self._units: dict[str, Unit] = {}

    def units(self, granularity: str) -> list[Unit]:
        if granularity == "unstructured":
            out = block_units(self.model)
        else:
            kinds = {"heads": ("heads",), "ffn": ("ffn",), "layers": ("layers",), "structured": ("heads", "ffn")}
            out = structured_units(self.model, kinds[granularity], gqa=self.gqa)
        self._units.update({u.name: u for u in out})
        return out

    def measure(self, ratios: Mapping[str, float]) -> float:
        units = [self._units[n] for n, r in ratios.items() if r > 0]
        if any(u.kind == "block" for u in units):
            with masked_blocks(self.model, {u.layer: ratios[u.name] for u in units}):
                return self._evaluate(self.model)
        if not units:
            return self._evaluate(self.model)

        plan = structured_plan(self.model, self.scores, units, ratios, gqa=self.gqa)
        return self._evaluate(structured_masks(self.model, plan))


def structured_plan(model: nn.Module, scores: Any, units: Sequence[Unit], ratios: Mapping[str, float],
                    gqa: str = "groups", round_to: int = 1):
    """The :class:`~prunekit.prune.structured.StructuredPlan` of per-unit ratios (layer units: removed at 1)."""
    heads = {u.layer: ratios[u.name] for u in units if u.kind == "heads" and ratios.get(u.name, 0) > 0}
    ffn = {u.layer: ratios[u.name] for u in units if u.kind == "ffn" and ratios.get(u.name, 0) > 0}
    gone = {u.layer for u in units if u.kind == "layer" and ratios.get(u.name, 0) >= 0.5}
    n = num_layers(model)
    if len(gone) >= n:
        raise PrunekitError(f"the plan removes all {n} layers")
    layers = [i for i in range(n) if i not in gone] if gone else None
    return plan_from_layer_ratios(model, scores, heads=heads, ffn=ffn, layers=layers, round_to=round_to, gqa=gqa)


class masked_blocks:  # noqa: N801 - used as a context manager, reads like one
    """Within the ``with``: the Linears of block i keep only their largest-|w| (1 − ratio_i) weights
    (Wanda scores instead when ``sq_norms`` holds the inputs' Σx² per Linear); restored on exit.
    ``mlp_ratios`` (per block) gives the MLP Linears their own ratio; ``ratios`` then sets attention's."""

    def __init__(self, model: nn.Module, ratios: Mapping[int, float],
                 sq_norms: Mapping[str, torch.Tensor] | None = None,
                 mlp_ratios: Mapping[int, float] | None = None) -> None:
        self.model, self.ratios, self.sq_norms, self.mlp_ratios = model, ratios, sq_norms, mlp_ratios
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> nn.Module:
        prefix, layers = transformer_layers(self.model)
        blocks = set(self.ratios) | set(self.mlp_ratios or {})
        with torch.no_grad():
            for i in sorted(blocks):
                block = layers[i]
                groups = sublayer_groups(self.model, block)
                attention = {n for g in groups[:2] for n in g}
                for name in (n for g in groups for n in g):
                    r = (self.ratios.get(i, 0.0) if self.mlp_ratios is None or name in attention
                         else self.mlp_ratios.get(i, 0.0))
                    if r <= 0:
                        continue
                    rows = as_rows(block.get_submodule(name))
                    self.saved.append((rows, rows.detach().clone()))
                    if self.sq_norms is not None:
                        keep = keep_per_row(wanda_scores(rows, self.sq_norms[f"{prefix}.{i}.{name}"]), r)
                    else:
                        flat = rows.detach().abs().flatten()
                        k = int(round(r * flat.numel()))
                        keep = torch.ones_like(flat, dtype=torch.bool)
                        if k:
                            keep[torch.topk(flat, k, largest=False, sorted=False).indices] = False
                        keep = keep.view_as(rows)
                    rows.masked_fill_(~keep.to(rows.device), 0.0)
        return self.model

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for rows, old in reversed(self.saved):
                rows.copy_(old)
        self.saved.clear()


# ----------------------------------------------------------------------------------------------
# Language models
# ----------------------------------------------------------------------------------------------


class LMProbe:
    """Perplexity of a causal LM on held-out windows with its blocks pruned, measured two ways.

    :meth:`measure` is the cheap proxy: Wanda masks (per output row) from the *dense* model's calibration
    statistics, perplexity on a few windows; it fills the sensitivity table the annealing walks on.
    :meth:`measure_real` runs the one-shot prune ``prunekit prune --task lm`` runs (with the method's
    default calibration, so the plan is judged as it will be applied) on the model's own weights, restores them after,
    and scores more held-out windows, in two halves, so a difference between plans can be told from noise.
    """

    metric, higher_is_better = "perplexity", False

    def __init__(self, model: nn.Module, calibration: torch.Tensor, windows: torch.Tensor,
                 identity: Mapping[str, Any], batch_size: int = 4, validation: torch.Tensor | None = None,
                 method: str = "wanda") -> None:
        self.model, self.windows, self.identity = model, windows, dict(identity)
        self.calibration, self.method, self.batch_size = calibration, method, batch_size
        self.validation = windows if validation is None else validation
        self.sq_norms = input_sq_norms(model, calibration, batch_size)
        self._units = {u.name: u for u in block_units(model)}
        self.halves: dict[tuple, list[float]] = {}  # measure_real's per-half perplexities, by plan

    def units(self, granularity: str) -> list[Unit]:
        if granularity != "unstructured":
            raise PrunekitError(f"--task lm: sensitivity and search work on per-block unstructured sparsity; "
                                f"--granularity {granularity} is for classifiers")
        return list(self._units.values())

    def measure(self, ratios: Mapping[str, float]) -> float:
        return self.measure_proxy(self.blocks(ratios))

    def measure_proxy(self, blocks: Sequence[float], mlp: Sequence[float] | None = None) -> float:
        """The proxy's perplexity of a whole plan (per-block ratios; ``mlp``: the MLP Linears' own)."""
        mlp_map = None if mlp is None else dict(enumerate(mlp))
        with masked_blocks(self.model, dict(enumerate(blocks)), self.sq_norms, mlp_map):
            return perplexity(self.model, self.windows, batch_size=len(self.windows))["perplexity"]

    def blocks(self, ratios: Mapping[str, float]) -> list[float]:
        """Per-unit ratios as the per-block list ``OneShotSettings.block_ratios`` takes."""
        out = [0.0] * len(self._units)
        for name, r in ratios.items():
            out[self._units[name].layer] = float(r)
        return out

    def measure_real(self, blocks: Sequence[float], mlp: Sequence[float] | None = None) -> float:
        """Perplexity on the validation windows after the real prune (the method's default calibration) at
        per-block ratios ``blocks`` (attention's, when ``mlp`` gives the MLP Linears their own); the weights
        are restored."""
        if mlp is not None and [float(x) for x in mlp] == [float(x) for x in blocks]:
            mlp = None
        settings = OneShotSettings(method=self.method, sparsity=float(np.mean(blocks)), block_ratios=list(blocks),
                                   mlp_ratios=None if mlp is None else list(mlp), batch_size=self.batch_size)
        _, layers = transformer_layers(self.model)
        saved = {k: v.detach().to("cpu", copy=True) for k, v in layers.state_dict().items()}
        device = model_device(self.model)
        try:
            with torch.no_grad():
                prune_oneshot(self.model, self.calibration, settings, device=device)
            self.model.to(device)
            half = max(1, len(self.validation) // 2)
            parts = [perplexity(self.model, w, batch_size=self.batch_size) for w in
                     (self.validation[:half], self.validation[half:]) if len(w)]
        finally:
            layers.load_state_dict(saved)
            self.model.to(device)
        key = tuple(round(float(x), 4) for x in [*blocks, *(mlp or [])])
        self.halves[key] = [p["perplexity"] for p in parts]
        tokens = sum(p["tokens"] for p in parts)
        return math.exp(sum(p["loss"] * p["tokens"] for p in parts) / max(tokens, 1))


@torch.no_grad()
def input_sq_norms(model: nn.Module, calibration: torch.Tensor, batch_size: int = 4) -> dict[str, torch.Tensor]:
    """Σ x_j² of every block Linear's inputs over the calibration windows, on the dense model."""
    prefix, layers = transformer_layers(model)
    sums: dict[str, torch.Tensor] = {}
    handles = []
    for i, block in enumerate(layers):
        for name in (n for g in sublayer_groups(model, block) for n in g):
            key = f"{prefix}.{i}.{name}"

            def hook(module: nn.Module, args: tuple, key: str = key) -> None:
                x = args[0].detach().float().reshape(-1, args[0].shape[-1])
                sums[key] = sums.get(key, 0) + (x * x).sum(0)

            handles.append(block.get_submodule(name).register_forward_pre_hook(hook))
    device = model_device(model)
    try:
        for s in range(0, len(calibration), batch_size):
            model(input_ids=calibration[s:s + batch_size].to(device))
    finally:
        for h in handles:
            h.remove()
    return sums

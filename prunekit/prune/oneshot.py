"""One-shot pruning of decoder LMs without retraining: magnitude, Wanda and SparseGPT, unstructured or N:M.

A criterion decides the mask (any criterion of :mod:`prunekit.importance.registry` that applies to
``oneshot``: |W|, Wanda), or a solver chooses it and rewrites the kept weights (SparseGPT; a least-squares
refit may follow either, :mod:`prunekit.prune.solvers`), and prune/calibration.py feeds every block the
activations of the already pruned blocks before it. Per-layer ratios may be uniform, outlier-aware
(OWL, Yin et al. 2024: blocks whose Wanda scores hold more outliers keep more weights, at the same total
sparsity) or set by one global ranking of all Wanda scores (the baseline a per-layer search has to beat).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from prunekit.arch import attention_linears, layer_stacks, selected_stack, transformer_layers
from prunekit.arch.experts import fold_expert_names, has_fused_experts, unfused_experts
from prunekit.errors import PrunekitError
from prunekit.importance import Importance, registry
from prunekit.importance.registry import ONESHOT, Names
from prunekit.importance.wanda import outlier_ratio, wanda_scores
from prunekit.prune.calibration import (
    CALIB_BATCH,
    InputStats,
    Windows,
    as_rows,
    per_block_statistic,
    sequential,
    sublayer_groups,
)
from prunekit.prune.masks import check_sparsity, keep_n_of_m, keep_per_row, parse_pattern
from prunekit.prune.reconstruct import corrected_target
from prunekit.prune.solvers import PRUNING_SOLVERS, LayerJob, Refit, Solver, pruning

#: one-shot methods: the criteria that apply to one-shot scoring, then the solvers that prune by themselves
ONESHOT_METHODS = Names(lambda: (*registry.names(ONESHOT), *PRUNING_SOLVERS))
LAYER_RATIOS = ("uniform", "owl", "global")
#: score quantiles kept per block part for the global ranking (memory: a few KB per block, not the scores)
GLOBAL_QUANTILES = 2049
GLOBAL_SAMPLE = 1 << 22  # scores sampled per part beyond this many (torch.quantile's input is bounded)


@dataclass
class OneShotSettings:
    """Everything that decides a one-shot LM pruning run (defaults are prunekit's recommended ones)."""

    method: str = "sparsegpt"
    sparsity: float = 0.5
    pattern: str | None = None  # "2:4", "4:8"; None = unstructured
    # uniform | owl | global (unstructured only; N:M is uniform by definition). Uniform by default: on
    # SmolLM2-135M OWL's ratios did not lower perplexity (bench/results/lm_oneshot.md) and cost one more
    # calibration pass. global: one threshold on all blocks' Wanda scores sets each block's attention and
    # MLP sparsity (bench/results/search.md compares it with uniform and a searched plan)
    layer_ratios: str = "uniform"
    owl_lambda: float = 0.08  # the largest deviation of a block's sparsity from the target
    owl_multiple: float = 5.0  # a score counts as an outlier above this × the block mean
    # None: on for sparsegpt (its weight update gains from seeing pruned q/k/v before o, gate/up before
    # down), off for wanda, whose mask barely changes but whose calibration time would grow by ~30 %
    true_sequential: bool | None = None
    # explicit per-block sparsity (e.g. from `prunekit search`); overrides layer_ratios when given
    block_ratios: list[float] | None = None
    # per-block sparsity of the MLP Linears when it differs from the attention ones (block_ratios then
    # holds the attention sparsity): `prunekit search` may split a block's budget between the two
    mlp_ratios: list[float] | None = None
    dense_targets: bool = False  # sparsegpt: aim each layer at the unpruned model's output (corrects drift)
    # sequential: each block calibrated on the outputs of the already-pruned blocks before it (two block
    # passes: statistics, then outputs); dense: on the unpruned model's activations (one pass, half the
    # time). None: sequential whenever weights are updated (sparsegpt, refit: they must see, and correct,
    # the error of earlier blocks); dense for a mask-only wanda, which on SmolLM2-135M was as good that
    # way (2.28x vs 2.31x dense perplexity at 50 %, 8.48x vs 8.36x at 2:4) in about half the time
    # (bench/results/lm_oneshot.md)
    calibration: str | None = None
    # refit the kept weights of every row by least squares once the mask is fixed (prune/reconstruct.py).
    # None: on for sparsegpt, whose greedy OBS update leaves part of each layer's output error on the table
    # (bench/results/lm_oneshot.md); off for magnitude and wanda, which would then need the Hessian they
    # are chosen to avoid
    refit: bool | None = None
    refit_damp: float = 0.001  # λ of the refit, × mean(diag XᵀX)
    refit_iters: int = 30  # conjugate-gradient steps (the error stops falling after ~20 on SmolLM2)
    damp: float = 0.01
    block_size: int = 128
    batch_size: int = CALIB_BATCH  # windows per forward pass (prune/calibration.py says why)

    def check(self) -> None:
        if self.method not in ONESHOT_METHODS:
            raise PrunekitError(f"unknown one-shot method {self.method!r}; choose {', '.join(ONESHOT_METHODS)}")
        if self.solver is None and registry.get(self.method, ONESHOT).uses_gradients:
            raise PrunekitError(f"--method {self.method} needs gradients: the one-shot engine only runs forward "
                                "passes")
        check_sparsity(self.sparsity)
        nm = parse_pattern(self.pattern)
        if nm is not None and self.sparsity and abs(self.sparsity - (1 - nm[0] / nm[1])) > 1e-9:
            raise PrunekitError(f"--pattern {self.pattern} fixes the sparsity at {1 - nm[0] / nm[1]:.2f}; "
                                f"drop --sparsity {self.sparsity} or make them agree")
        if self.calibration not in (None, "sequential", "dense"):
            raise PrunekitError(f"--calibration must be sequential or dense, got {self.calibration!r}")
        if self.calibration == "dense" and (self.dense_targets or self.true_sequential):
            raise PrunekitError("--calibration dense calibrates on the unpruned model: dense targets and "
                                "sublayer-sequential statistics need the pruned stream (--calibration sequential)")
        if self.layer_ratios not in LAYER_RATIOS:
            raise PrunekitError(f"--layer-ratios must be {', '.join(LAYER_RATIOS)}, got {self.layer_ratios!r}")
        if self.block_ratios is not None:
            if self.nm is not None:
                raise PrunekitError("per-block ratios apply to unstructured sparsity only, not N:M")
            for r in self.block_ratios:
                check_sparsity(r)
        if self.mlp_ratios is not None:
            if self.block_ratios is None or len(self.mlp_ratios) != len(self.block_ratios):
                raise PrunekitError("per-block MLP ratios need per-block (attention) ratios of the same length")
            for r in self.mlp_ratios:
                check_sparsity(r)
        if not 0 < self.damp < 10:
            raise PrunekitError(f"--damp must be in (0, 10), got {self.damp}")
        if not 0 < self.refit_damp < 10 or self.refit_iters < 1:
            raise PrunekitError(f"refit needs damping in (0, 10) and at least one step, got {self.refit_damp} "
                                f"and {self.refit_iters}")

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern)

    @property
    def solver(self) -> type[Solver] | None:
        """The solver that prunes as this method (SparseGPT), or None when a criterion ranks."""
        return pruning(self.method)

    def criterion(self) -> Importance | None:
        """A fresh criterion object for this method, or None when a solver prunes."""
        return None if self.solver is not None else registry.create(self.method, ONESHOT)

    @property
    def refits(self) -> bool:
        return (self.solver is not None and self.solver.refit_after) if self.refit is None else self.refit

    @property
    def needs_hessian(self) -> bool:
        return (self.solver is not None and self.solver.needs_hessian) or self.refits

    @property
    def stream(self) -> str:
        """What blocks are calibrated on: "pruned" (sequential) or "dense" (the unpruned model)."""
        if self.calibration is None:
            return "pruned" if self.needs_hessian or self.dense_targets or self.true_sequential else "dense"
        return "dense" if self.calibration == "dense" else "pruned"

    @property
    def sequential_sublayers(self) -> bool:
        if self.true_sequential is None:
            return self.solver is not None and self.solver.sublayer_sequential
        return self.true_sequential

    @property
    def target(self) -> float:
        nm = self.nm
        return 1 - nm[0] / nm[1] if nm else self.sparsity

    @property
    def scores_from_activations(self) -> bool:
        """Its masks need calibration statistics: a solver prunes, or the criterion scores from activations."""
        return self.solver is not None or registry.get(self.method, ONESHOT).uses_activations

    @property
    def uses_calibration(self) -> bool:
        return self.scores_from_activations or self.refits or (
            self.layer_ratios != "uniform" and self.nm is None and self.block_ratios is None)


@dataclass
class OneShotResult:
    layer_sparsity: dict[str, float] = field(default_factory=dict)  # per Linear, achieved
    block_targets: list[float] = field(default_factory=list)  # per block, asked (attention, if split)
    mlp_targets: list[float] | None = None  # per block, asked for the MLP Linears when split
    seconds: float = 0.0
    owl_outlier_ratios: list[float] | None = None


def check_patterns(model: nn.Module, settings: OneShotSettings) -> None:
    """N:M needs every pruned Linear's input width divisible by M: fail before any work."""
    nm = settings.nm
    if nm is None:
        return
    prefix, layers = transformer_layers(model)
    for index, block in enumerate(layers):
        for name in (n for g in sublayer_groups(model, block) for n in g):
            width = as_rows(block.get_submodule(name)).shape[1]
            if width % nm[1]:
                raise PrunekitError(f"--pattern {settings.pattern}: {prefix}.{index}.{name} has input width {width}, "
                                    f"not a multiple of {nm[1]}")


def owl_block_ratios(outliers: list[float], target: float, lam: float) -> list[float]:
    """OWL: block sparsity = target − (scaled outlier ratio − its mean), within target ± lam."""
    d = np.asarray(outliers, dtype=np.float64)
    if d.max() - d.min() < 1e-12:
        return [target] * len(d)
    scaled = (d - d.min()) / (d.max() - d.min()) * 2 * lam
    keep = scaled - scaled.mean() + (1 - target)
    return [float(np.clip(1 - k, 0.0, 0.99)) for k in keep]


def score_quantiles(scores: list[Tensor], seed: int = 0) -> tuple[np.ndarray, int]:
    """A part's score distribution as GLOBAL_QUANTILES quantiles (a seeded sample of at most GLOBAL_SAMPLE
    scores for large parts) and its count: enough to place one global threshold without keeping the scores."""
    flat = torch.cat([s.flatten().float() for s in scores])
    n = flat.numel()
    if n > GLOBAL_SAMPLE:
        g = torch.Generator(device="cpu").manual_seed(seed)
        flat = flat[torch.randint(n, (GLOBAL_SAMPLE,), generator=g).to(flat.device)]
    levels = torch.linspace(0, 1, GLOBAL_QUANTILES, device=flat.device)
    return torch.quantile(flat, levels).double().cpu().numpy(), n


def global_part_ratios(parts: list[tuple[np.ndarray, int]], target: float) -> list[float]:
    """Each part's sparsity under one threshold on all parts' scores chosen so that ``target`` of all
    weights fall below it (parts given as :func:`score_quantiles`)."""
    levels = np.linspace(0.0, 1.0, GLOBAL_QUANTILES)
    points = np.unique(np.concatenate([q for q, _ in parts]))
    below = sum(n * np.interp(points, q, levels) for q, n in parts)  # weights below each candidate threshold
    threshold = np.interp(target * sum(n for _, n in parts), below, points)
    return [float(np.clip(np.interp(threshold, q, levels), 0.0, 0.99)) for q, _ in parts]


def _mask(settings: OneShotSettings, criterion: Importance, scores: Tensor, sparsity: float) -> Tensor:
    nm = settings.nm
    if nm is not None:
        return keep_n_of_m(scores, *nm)
    if criterion.scope != "row":
        # magnitude compares within the whole matrix (the classic baseline); Wanda within rows
        flat = scores.flatten()
        k = int(round(sparsity * flat.numel()))
        keep = torch.ones_like(flat, dtype=torch.bool)
        if k:
            keep[torch.topk(flat, k, largest=False, sorted=False).indices] = False
        return keep.view_as(scores)
    return keep_per_row(scores, sparsity)


def prune_oneshot(
    model: nn.Module,
    calibration: Windows | None,
    settings: OneShotSettings,
    *,
    device: torch.device | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    only: Collection[str] | None = None,
    previous: Mapping[str, Tensor] | None = None,
) -> OneShotResult:
    """Prune every Linear inside the blocks of ``model`` in place; ``calibration`` is (n, seq_len) token ids
    (or model inputs by name, as :data:`~prunekit.prune.calibration.Windows`).

    ``only``: the qualified names (``<blocks>.<i>.<linear>``) to prune, the other Linears stay as they
    are (a classifier's --prunable/--exclude). ``previous``: keep-masks (as the weight is stored) from an
    earlier step, keyed the same way; what they pruned stays pruned, so sparsity only grows.
    """
    settings.check()
    again = {"device": device, "progress": progress, "only": only, "previous": previous}
    if has_fused_experts(model):  # each expert a Linear pair while it is calibrated and pruned
        with unfused_experts(model):
            result = prune_oneshot(model, calibration, settings, **again)
        result.layer_sparsity = fold_expert_names(result.layer_sparsity, model)
        return result
    stacks = layer_stacks(model)
    if len(stacks) > 1:
        return _per_stack(model, [name for name, _ in stacks], calibration, settings, **again)
    check_patterns(model, settings)
    if settings.uses_calibration and calibration is None:
        raise PrunekitError(f"--method {settings.method} needs calibration text")
    start = time.perf_counter()
    prefix, layers = transformer_layers(model)
    result = OneShotResult()
    targets = [settings.target] * len(layers)
    mlp_targets = [float(r) for r in settings.mlp_ratios] if settings.mlp_ratios is not None else None
    attention = attention_linears(model, layers[0]) if len(layers) else set()
    split = len(attention)  # per_block_statistic lists a block's Linears attention first, as sublayer_groups

    def block_wanda(linears: list[nn.Module], stats: list[InputStats]) -> list[Tensor]:
        return [wanda_scores(as_rows(m), s.sq_norms) for m, s in zip(linears, stats, strict=True)]

    def attention_and_mlp(linears: list[nn.Module], stats: list[InputStats]) -> list[tuple[np.ndarray, int]]:
        scores = block_wanda(linears, stats)
        return [score_quantiles(scores[:split]), score_quantiles(scores[split:])]

    ranked = settings.nm is None and settings.target > 0  # per-block ratios from scores (OWL, global)
    if settings.block_ratios is not None:
        if len(settings.block_ratios) != len(layers) or len(settings.mlp_ratios or layers) != len(layers):
            raise PrunekitError(f"{len(settings.block_ratios)} per-block ratios given for a model with "
                                f"{len(layers)} blocks")
        targets = [float(r) for r in settings.block_ratios]
    elif settings.layer_ratios == "owl" and ranked:
        result.owl_outlier_ratios = per_block_statistic(
            model, calibration, lambda linears, stats: outlier_ratio(block_wanda(linears, stats),
                                                                     settings.owl_multiple),
            batch_size=settings.batch_size, device=device,
        )
        targets = owl_block_ratios(result.owl_outlier_ratios, settings.target, settings.owl_lambda)
        if progress:
            progress("outlier ratios", 1, 1)
    elif settings.layer_ratios == "global" and ranked:
        parts = per_block_statistic(model, calibration, attention_and_mlp, batch_size=settings.batch_size,
                                    device=device)
        ratios = global_part_ratios([p for block in parts for p in block], settings.target)
        targets, mlp_targets = ratios[0::2], ratios[1::2]
        if progress:
            progress("global ranking", 1, 1)
    result.block_targets = targets
    result.mlp_targets = mlp_targets
    solver = settings.solver.build(settings) if settings.solver is not None else None
    criterion = settings.criterion()
    refit = Refit.build(settings) if settings.refits else None

    def prune_linear(index: int, name: str, module: nn.Module, stats: InputStats | None) -> None:
        qualified = f"{prefix}.{index}.{name}"
        if only is not None and qualified not in only:
            return
        rows = as_rows(module)
        before = None
        if previous is not None and qualified in previous:  # True = pruned before, in (out, in) layout
            before = ~as_rows(module, previous[qualified].to(rows.device))
        sparsity = targets[index] if mlp_targets is None or name in attention else mlp_targets[index]
        # what the layer should compute: its own dense weights, or their dense-target correction (a copy
        # only when the refit needs the dense weights after the mask has zeroed them)
        target = rows.detach().clone() if settings.refits else rows
        if stats is not None and stats.xtd is not None:
            target = corrected_target(target, stats.xtx, stats.xtd, settings.damp)
        job = LayerJob(rows, target, stats, sparsity, settings.nm, before)
        if solver is not None:
            keep = solver.solve(job, None)
        else:
            scores = criterion.layer_scores(rows, stats)
            if before is not None:  # ranked below every other weight: pruned again first
                scores = scores.masked_fill(before, float("-inf"))
            keep = _mask(settings, criterion, scores, sparsity)
            rows.masked_fill_(~keep.to(rows.device), 0.0)
        if refit is not None:
            refit.solve(job, keep)
        result.layer_sparsity[qualified] = 1.0 - float(keep.float().mean())

    with torch.no_grad():
        if not settings.scores_from_activations and not settings.refits:  # OWL's statistics were taken above
            for index, block in enumerate(layers):
                for name in (n for g in sublayer_groups(model, block) for n in g):
                    prune_linear(index, name, block.get_submodule(name), None)
        else:
            sequential(
                model, calibration, prune_linear, hessian=settings.needs_hessian,
                true_sequential=settings.sequential_sublayers, stream=settings.stream,
                batch_size=settings.batch_size, device=device,
                dense_targets=settings.dense_targets and settings.needs_hessian,
                progress=(lambda i, n: progress("blocks", i, n)) if progress else None,
            )
    result.seconds = time.perf_counter() - start
    return result


def _per_stack(model: nn.Module, stacks: list[str], calibration: Windows | None, settings: OneShotSettings,
               **kwargs: Any) -> OneShotResult:
    """An encoder–decoder's stacks pruned in turn, each block by block; its decoder sees the ids too."""
    if isinstance(calibration, Tensor) and getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        calibration = {"input_ids": calibration, "decoder_input_ids": calibration}
    result = OneShotResult(mlp_targets=None)
    for name in stacks:
        with selected_stack(model, name):
            part = prune_oneshot(model, calibration, settings, **kwargs)
        result.layer_sparsity.update(part.layer_sparsity)
        result.block_targets += part.block_targets
        result.seconds += part.seconds
    return result

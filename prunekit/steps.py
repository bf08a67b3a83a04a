"""The prune step engine: one place for what a single pruning step does, shared by the loop
(:mod:`prunekit.pipeline`, every schedule) and the recipe stages (:mod:`prunekit.recipe`).

An unstructured step scores weights with a criterion (after the calibration passes it needs) and
updates the masks, or lets a solver (SparseGPT) prune and rewrite the kept weights; a structured step
scores groups on calibration batches, plans what to remove and cuts it out. The callers decide how
often, how far and what comes between (recovery, measuring); the step itself is written once here.

It sits below the loop and recipes and above prune/importance/train/tasks: it knows a model, its task,
its training split and tokenizer (anything with those attributes, such as a pipeline ``Workbench``), never
settings objects or plan files, so everything a step needs arrives as plain arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from prunekit.arch import is_text_model, prunable_modules
from prunekit.errors import PrunekitError
from prunekit.importance import METHODS, Importance, make_importance
from prunekit.importance.groups import group_scores
from prunekit.prune import MaskSet, compute_masks
from prunekit.prune.oneshot import OneShotSettings, prune_oneshot
from prunekit.prune.solvers import PRUNING_SOLVERS
from prunekit.prune.structured import apply_plan, model_shapes, num_layers, plan_from_ratios
from prunekit.prune.structured.ranking import plan_from_layer_ratios
from prunekit.prune.textnets import apply_text_plan, text_plan_from_ratios, text_shapes
from prunekit.runtime import default_device
from prunekit.tasks import Task
from prunekit.tasks.base import EncodedSplit
from prunekit.train import calibrate

Batch = dict[str, torch.Tensor]


class Bench(Protocol):
    """What a step reads: the model (replaced in place by some steps), its task, training split and tokenizer."""

    model: nn.Module
    task: Task
    train: EncodedSplit
    tokenizer: PreTrainedTokenizerBase


def calibration_batches(wb: Bench, n: int, batch_size: int, seed: int) -> list[Batch]:
    """``n`` seeded training batches on the model's device: the inputs every group criterion scores on."""
    loader = wb.task.calibration_loader(wb.train, wb.tokenizer, batch_size, seed)
    device = default_device()
    out = []
    for batch in loader:
        out.append({k: v.to(device) for k, v in batch.items()})
        if len(out) >= n:
            break
    return out


# ---------------------------------------------------------------------------------------------------
# unstructured: masks from a criterion, or a solver that rewrites the kept weights
# ---------------------------------------------------------------------------------------------------


@dataclass
class SolverMethod:
    """A solver that prunes (:data:`~prunekit.prune.solvers.PRUNING_SOLVERS`: SparseGPT) and its options;
    ``block_ratios``/``mlp_ratios``: a per-block plan's sparsities (each block's own instead of the step's
    target)."""

    method: str
    damp: float | None = None
    block_ratios: Sequence[float] | None = None
    mlp_ratios: Sequence[float] | None = None


def check_solver(model: nn.Module, params: Mapping[str, nn.Parameter], method: str) -> None:
    """SparseGPT runs block by block over a transformer: fail before any work on anything else."""
    if is_text_model(model):
        raise PrunekitError(f"--method {method} prunes the Linear layers of transformer blocks; for this "
                            f"{type(model).__name__} use one of {', '.join(METHODS)}")
    inside = prunable_modules(model)
    outside = sorted(set(params) - set(inside))
    if outside:
        raise PrunekitError(f"--method {method} prunes Linear layers inside the transformer blocks; {outside[0]} is "
                            "not one (narrow --prunable)")


def unstructured_method(model: nn.Module, params: Mapping[str, nn.Parameter], method: str,
                        seed: int) -> Importance | None:
    """The criterion ``method`` names, checked against the model before any work (None: ``method`` is a solver
    that prunes, :data:`~prunekit.prune.solvers.PRUNING_SOLVERS`, checked the same way)."""
    if method in PRUNING_SOLVERS:
        check_solver(model, params, method)
        return None
    criterion = make_importance(method, seed)
    criterion.check(model, params)
    return criterion


def default_scope(criterion: Importance) -> str:
    """Where an unstructured criterion's scores compare when the user did not say: its own scope (Wanda:
    within a row), else across all weights."""
    return criterion.scope or "global"


def solve(wb: Bench, masks: MaskSet, solver: SolverMethod, target: float | None, *, seed: int, calib_batches: int,
          batch_size: int, optimizer: torch.optim.Optimizer | None = None) -> None:
    """A solver through the LM one-shot engine (:func:`prune_oneshot`): block by block on packed training text
    (no padding enters a Hessian), each of the masks' weights to ``target`` (or its block's ratio) with its kept
    weights updated; the zero pattern becomes the masks recovery keeps, and what earlier steps pruned stays
    pruned."""
    settings = OneShotSettings(method=solver.method, sparsity=target, batch_size=batch_size)
    if solver.damp is not None:
        settings.damp = solver.damp
    if solver.block_ratios is not None:
        settings.block_ratios, settings.mlp_ratios = solver.block_ratios, solver.mlp_ratios
    model, device = wb.model, default_device()
    windows = wb.task.calibration_windows(wb.train, wb.tokenizer, calib_batches, batch_size, seed)
    was_training = model.training
    model.eval()  # no dropout in the activations the Hessians are built from
    try:
        prune_oneshot(model, windows, settings, device=device, only=set(masks.params), previous=masks.masks or None)
    finally:
        model.to(device)  # the engine parks finished blocks on the CPU
        model.train(was_training)
    masks.update({n: p != 0 for n, p in masks.params.items()}, optimizer)


def unstructured_step(
    wb: Bench, masks: MaskSet, method: Importance | SolverMethod, target: float | None, *, scope: str, seed: int,
    calib_batches: int, batch_size: int, threshold: float | None = None,
    previous: Mapping[str, torch.Tensor] | None = None, block_targets: Mapping[str, float] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> float | None:
    """Prune ``masks``' weights to ``target`` (or, with ``target`` None, below ``threshold``) and return the
    sparsity reached. A criterion gets its calibration passes, scores, and the masks follow (``previous``
    zeros stay zero and count; ``block_targets``: each weight to its own sparsity); a :class:`SolverMethod`
    prunes and updates the kept weights instead."""
    if isinstance(method, SolverMethod):
        solve(wb, masks, method, target, seed=seed, calib_batches=calib_batches, batch_size=batch_size,
              optimizer=optimizer)
        return target
    calibrate(wb.model, wb.train, wb.tokenizer, method, dict(masks.params), calib_batches, batch_size, seed,
              task=wb.task)
    scores = method.scores(dict(masks.params))
    if block_targets is not None:
        new = {n: compute_masks({n: sc}, block_targets[n], scope="local")[n] for n, sc in scores.items()}
    else:
        new = compute_masks(scores, target, scope=scope, threshold=threshold if target is None else None,
                            previous=previous)
    masks.update(new, optimizer)
    if method.reset_after_prune:
        method.reset()
    return target if target is not None else masks.sparsity()


# ---------------------------------------------------------------------------------------------------
# structured: score groups, plan, cut
# ---------------------------------------------------------------------------------------------------


@dataclass
class Ratios:
    """What one structured step removes, each a fraction of what is left (``layers``: a count). ``heads``/``ffn``
    as per-layer mappings follow a plan file (:func:`plan_from_layer_ratios`); ``units``/``filters``/``embedding``
    are for LSTM/GRU/RNN and TextCNN models."""

    heads: float | Mapping[int, float] = 0.0
    ffn: float | Mapping[int, float] = 0.0
    hidden: float = 0.0
    layers: int = 0
    units: float = 0.0
    filters: float = 0.0
    embedding: float = 0.0


def structured_step(
    wb: Bench, ratios: Ratios, *, criterion: str, layer_criterion: str | None, scope: str, round_to: int,
    seed: int, calib_batches: int, batch_size: int, gqa: str = "groups",
) -> tuple[Any, dict[str, Any]]:
    """Score the groups on ``calib_batches`` seeded training batches (``layer_criterion`` ranks layers when
    ``ratios.layers`` removes some), plan the cut and apply it; returns the plan and the model's new shapes."""
    batches = calibration_batches(wb, calib_batches, batch_size, seed)
    scores = group_scores(wb.model, criterion, batches=batches, seed=seed,
                          layers=layer_criterion if ratios.layers else "groups", remove_layers=ratios.layers)
    model = wb.model
    if is_text_model(model):
        plan = text_plan_from_ratios(model, scores.units, units=ratios.units, filters=ratios.filters,
                                     embedding=ratios.embedding, scope=scope, round_to=round_to)
        apply_text_plan(model, plan)
        return plan, text_shapes(model)
    if isinstance(ratios.heads, Mapping) or isinstance(ratios.ffn, Mapping):
        plan = plan_from_layer_ratios(model, scores, heads=ratios.heads, ffn=ratios.ffn, round_to=round_to, gqa=gqa)
    else:
        plan = plan_from_ratios(model, scores, heads=ratios.heads, ffn=ratios.ffn, hidden=ratios.hidden,
                                layers=ratios.layers / num_layers(model), scope=scope, round_to=round_to, gqa=gqa)
    apply_plan(model, plan)
    return plan, model_shapes(model)

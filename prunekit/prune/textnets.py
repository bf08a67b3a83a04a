"""Structured pruning of recurrent and convolutional text models: groups, plans and removal for real.

Three granularities, located through :func:`prunekit.arch.textnets.text_layout`:

- **units**: one hidden unit of one layer and direction of an LSTM/GRU/RNN: its row in every gate block
  of ``weight_ih``/``weight_hh``/biases, its ``weight_hh`` column, and the column it feeds in whatever
  reads that layer's [forward | reverse] output (the next layer, the next RNN module, or the
  classifier). One module has one ``hidden_size``, so all its layers and directions keep the same count.
- **filters**: one Conv1d output channel (weight row and bias) and its classifier column.
- **embedding**: one embedding dimension and the matching input column of every layer reading it.

The groups are :class:`~prunekit.prune.structured.GroupSet` objects, so the group criteria of
:mod:`prunekit.importance.groups` score them unchanged. Zeroing a group is an exact stand-in for removing
it: a unit whose gate rows are all zero keeps a hidden state of exactly 0 from h0 = 0 (LSTM: g = tanh(0),
so c stays 0; GRU: n = tanh(0) and h = z·h_prev; RNN: tanh/relu(0) = 0), a zeroed filter pools to
relu(0) = 0, and a zeroed embedding dim is 0 everywhere; :func:`text_masks` builds that reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.arch.groups import TextGroup, text_groups  # text groups: importable here too
from prunekit.arch.textnets import EXPECTED, TextLayout, probe, rnn_directions, text_layout
from prunekit.errors import PrunekitError
from prunekit.prune.structured.ranking import check_ratio, keep_counts, round_keep, top_indices
from prunekit.prune.surgery import (
    as_index,
    keep_conv_in_channels,
    keep_conv_out_channels,
    keep_embedding_dims,
    keep_in_features,
    keep_rnn_inputs,
    keep_rnn_units,
)

KINDS = ("units", "filters", "embedding")


# ----------------------------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------------------------


@dataclass
class TextPlan:
    """Kept indices per group name (original indices); a missing name keeps everything."""

    keep: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"keep": self.keep}


def text_plan_from_ratios(
    model: nn.Module, scores: dict[str, Tensor], units: float = 0.0, filters: float = 0.0,
    embedding: float = 0.0, scope: str = "local", round_to: int = 1,
) -> TextPlan:
    """Keep the best-scoring groups; every ratio is the fraction *removed*.

    ``scope="local"`` removes the same fraction from every layer, direction and conv; ``"global"``
    ranks all units (or all filters) together. Either way the layers and directions of one RNN module
    keep the same number of units (one ``hidden_size``): global gives each the module's mean count.
    ``round_to`` keeps widths multiples of N. Asking to remove a kind the model lacks, or every group
    of a layer, is an error.
    """
    ratios = {"units": check_ratio("units", units), "filters": check_ratio("filters", filters),
              "embedding": check_ratio("embedding", embedding)}
    groups = text_groups(model)
    plan = TextPlan()
    what = {"units": "hidden unit", "filters": "filter", "embedding": "embedding dimension"}
    for kind, ratio in ratios.items():
        if ratio == 0:
            continue
        mine = [g for g in groups if g.kind == kind]
        if not mine:
            raise PrunekitError(f"--{kind}: this model has no {what[kind]}s to remove "
                                f"({'no LSTM/GRU/RNN layer' if kind == 'units' else 'no Conv1d layer'})")
        vec = {}
        for g in mine:
            s = scores.get(g.name)
            if s is None or s.numel() != g.count:
                raise PrunekitError(f"{kind} scores for {g.name}: expected {g.count}, got "
                                    f"{'none' if s is None else s.numel()}")
            vec[g.name] = s.detach().float().cpu()
        counts = keep_counts(vec, ratio, scope if kind != "embedding" else "local")
        if kind == "units":  # one hidden_size per module
            for module in {g.module for g in mine}:
                names = [g.name for g in mine if g.module == module]
                k = int(round(sum(counts[n] for n in names) / len(names)))
                counts.update(dict.fromkeys(names, k))
        for g in mine:
            if counts[g.name] == 0:
                raise PrunekitError(f"--{kind} {ratio} ({scope}) would remove every {what[kind]} of {g.name} "
                                    f"({g.count}); lower the ratio")
            k = round_keep(counts[g.name], g.count, round_to, g.name)
            plan.keep[g.name] = top_indices(vec[g.name], k)
    return plan


def check_text_ratios(model: nn.Module, units: float = 0.0, filters: float = 0.0, embedding: float = 0.0,
                      scope: str = "local", round_to: int = 1) -> None:
    """Fail before any work if the ratios cannot apply to this model (e.g. they remove every unit).

    Uses evenly spread stand-in scores, so a global ranking spreads like a local one; real scores can
    still empty a layer under ``scope="global"``, which the plan then reports."""
    scores = {g.name: (torch.arange(g.count) + 1) / g.count for g in text_groups(model)}
    text_plan_from_ratios(model, scores, units, filters, embedding, scope, round_to)


# ----------------------------------------------------------------------------------------------
# Removal and its masked reference
# ----------------------------------------------------------------------------------------------


def _checked(model: nn.Module, plan: TextPlan) -> tuple[TextLayout, list[TextGroup], dict[str, Tensor]]:
    """Validate the whole plan before anything changes, so a bad plan leaves the model untouched."""
    layout = text_layout(model)
    groups = text_groups(model, layout)
    by_name = {g.name: g for g in groups}
    unknown = sorted(set(plan.keep) - set(by_name))
    if unknown:
        raise PrunekitError(f"plan names unknown groups {unknown}; this model has {sorted(by_name)}")
    keep = {g.name: as_index(plan.keep.get(g.name, range(g.count)), g.count, g.name) for g in groups}
    for module in {g.module for g in groups if g.kind == "units"}:
        counts = {keep[g.name].numel() for g in groups if g.module == module}
        if len(counts) > 1:
            raise PrunekitError(f"every layer and direction of {module} must keep the same number of units, "
                                f"plan keeps {sorted(counts)}")
    return layout, groups, keep


def apply_text_plan(model: nn.Module, plan: TextPlan) -> nn.Module:
    """Physically remove everything the plan does not keep (in place); returns the model.

    A custom module (traced, not from the table) is first pruned as a copy and must give the same outputs
    as :func:`text_masks` on a probe batch: that catches a forward pass that uses a layer's output in a
    way the layout does not describe (sliced, reused, added elsewhere), and leaves the model untouched.
    """
    layout, groups, keep = _checked(model, plan)
    if layout.family == "traced":
        _verify_on_copy(model, plan, layout)
    _apply(model, layout, groups, keep)
    return model


def _verify_on_copy(model: nn.Module, plan: TextPlan, layout: TextLayout) -> None:
    expected = probe(text_masks(model, plan), layout)
    trial = copy.deepcopy(model)
    t_layout, t_groups, t_keep = _checked(trial, plan)
    _apply(trial, t_layout, t_groups, t_keep)
    try:
        got = probe(trial, t_layout)
    except PrunekitError as err:
        raise PrunekitError(f"after removing units/filters/dims, {err}") from None
    diff = float((got.float() - expected.float()).abs().max()) if got.shape == expected.shape else float("inf")
    if diff > 1e-4 * (1.0 + float(expected.abs().max())):
        raise PrunekitError(f"prunekit cannot trace {type(model).__name__}: removing groups changed its outputs beyond "
                            f"zeroing them (max diff {diff:.3g}), so its forward uses some layer's output in a way "
                            f"{EXPECTED.removeprefix('prunekit prunes ')} does not describe")


def _apply(model: nn.Module, layout: TextLayout, groups: list[TextGroup], keep: dict[str, Tensor]) -> None:
    ename, emb = layout.embedding
    e = keep["embedding"]
    if e.numel() < emb.embedding_dim:
        keep_embedding_dims(emb, e)
        if layout.recurrent:
            keep_rnn_inputs(layout.recurrent[0][1], e)
        for _, conv in layout.convs:
            keep_conv_in_channels(conv, e)
    for m, (name, rnn) in enumerate(layout.recurrent):
        mine = {(g.layer, g.direction): keep[g.name] for g in groups if g.module == name}
        h, last = rnn.hidden_size, rnn.num_layers - 1
        out_idx = torch.cat([d * h + mine[(last, d)] for d in range(rnn_directions(rnn))])
        if all(v.numel() == h for v in mine.values()):
            continue
        keep_rnn_units(rnn, mine)
        if m + 1 < len(layout.recurrent):
            keep_rnn_inputs(layout.recurrent[m + 1][1], out_idx)
        else:
            keep_in_features(layout.classifier[1], out_idx)
    if layout.convs:
        cols, offset = [], 0
        for name, conv in layout.convs:
            n = conv.out_channels
            if keep[name].numel() < n:
                keep_conv_out_channels(conv, keep[name])
            cols.append(offset + keep[name])
            offset += n
        cols_t = torch.cat(cols)
        if cols_t.numel() < layout.classifier[1].in_features:
            keep_in_features(layout.classifier[1], cols_t)
    sync = getattr(model, "sync_config", None)
    if callable(sync):
        sync()


def _removed(keep: Tensor, size: int) -> Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[keep] = False
    return mask.nonzero().flatten()


@torch.no_grad()
def text_masks(model: nn.Module, plan: TextPlan) -> nn.Module:
    """A copy of ``model`` with every removed group zeroed (all its slices) and every shape unchanged;
    its outputs equal ``apply_text_plan(model, plan)``'s (see the module docstring for why)."""
    _, groups, keep = _checked(model, plan)
    ref = copy.deepcopy(model)
    for g in groups:
        gone = _removed(keep[g.name], g.count)
        if gone.numel() == 0:
            continue
        for part in g.groups.parts:
            p = ref.get_parameter(part.param)
            idx = (part.offset + gone[:, None] * part.size + torch.arange(part.size)).flatten()
            p.index_fill_(part.dim, idx.to(p.device), 0.0)
    return ref


def text_shapes(model: nn.Module) -> dict[str, Any]:
    """Widths per group (what a report shows and what a custom module needs to be rebuilt)."""
    return {"family": text_layout(model).family, "widths": {g.name: g.count for g in text_groups(model)}}

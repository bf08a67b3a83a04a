"""From group scores and ratios to a plan: rank, round, keep the best."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from prunekit.arch.sites import attn_site, block_indices, check_layers_removable, ffn_site, hidden_sites, num_layers
from prunekit.errors import PrunekitError
from prunekit.importance.base import GroupScores  # what criteria return; importable here as it always was
from prunekit.prune.structured.plan import StructuredPlan

GQA_MODES = ("groups", "heads")
SCOPES = ("local", "global")


def check_ratio(name: str, r: float) -> float:
    if not 0.0 <= r <= 1.0:
        raise PrunekitError(f"{name} ratio must be in [0, 1], got {r}")
    return float(r)


def top_indices(scores: Tensor, k: int) -> list[int]:
    """Indices of the k highest scores, ascending; ties keep the lower index (deterministic)."""
    order = torch.sort(scores.detach().float().cpu(), descending=True, stable=True).indices[:k]
    return sorted(order.tolist())


def round_keep(k: int, total: int, n: int, what: str) -> int:
    """Round a kept width to a multiple of ``n`` (nearest, at least n, at most the original width).

    A width that is not pruned at all is left as it is.
    """
    if n <= 1 or k == total:
        return k
    m = max(n, int(round(k / n)) * n)
    if m > total:
        m = (total // n) * n
    if m == 0:
        raise PrunekitError(f"{what}: width {total} is smaller than round_to={n}")
    return m


def _need(scores: dict[int, Tensor], layer: int, n: int, what: str) -> Tensor:
    t = scores.get(layer)
    if t is None or t.numel() != n:
        got = "none" if t is None else t.numel()
        raise PrunekitError(f"{what} scores for layer {layer}: expected {n}, got {got}")
    return t.detach().float().cpu()


def keep_counts(units: dict[int, Tensor], ratio: float, scope: str) -> dict[int, int]:
    """How many units each layer keeps: the same fraction per layer, or one ranking across layers.

    Global: each layer's best unit is ranked last, so the ranking never empties a layer while the
    total allows (one ranking over MiniLM's heads would remove all 12 of layer 5, a layer that cannot
    run without a head; removing a whole layer is what ``layers=`` is for)."""
    if scope == "local":
        return {i: t.numel() - int(round(ratio * t.numel())) for i, t in units.items()}
    layers = list(units)
    flat = torch.cat([units[i].float().index_fill(0, units[i].float().argmax().view(1), float("inf"))
                      for i in layers])
    owner = torch.cat([torch.full((units[i].numel(),), j) for j, i in enumerate(layers)])
    n_prune = int(round(ratio * flat.numel()))
    order = torch.sort(flat, stable=True).indices[:n_prune]  # lowest first; ties prune the earlier
    pruned = torch.bincount(owner[order], minlength=len(layers))
    return {i: units[i].numel() - int(pruned[j]) for j, i in enumerate(layers)}


def plan_from_ratios(
    model: nn.Module,
    scores: GroupScores,
    heads: float = 0.5,
    ffn: float = 0.5,
    layers: float = 0.0,
    hidden: float = 0.0,
    scope: str = "local",
    round_to: int = 1,
    gqa: str = "groups",
) -> StructuredPlan:
    """Rank groups by importance and keep the best; every ratio is the fraction *removed*.

    - ``layers`` first: the lowest-scoring ``round(layers · L)`` blocks go (ranked, not truncated);
      heads and FFN neurons are then chosen among the kept blocks.
    - ``scope``: ``"local"`` removes the same fraction in every layer; ``"global"`` ranks the groups
      of all layers together, so widths end up uneven; it keeps at least each layer's best head and
      neuron while the total allows, and a layer that would still be left empty is an error.
    - ``gqa`` (grouped-query attention only): ``"groups"`` removes whole key/value groups with all
      their query heads; ``"heads"`` removes query heads inside every group, the same number per group
      (local: the removed count must divide evenly over the groups; global: each layer's kept count
      is rounded to a whole number per group).
    - ``round_to``: kept FFN and hidden widths become multiples of N (head counts are already whole
      heads). The hidden width is model-wide, so ``scope`` does not apply to it.
    """
    heads, ffn, layers, hidden = (check_ratio(n, r) for n, r in
                                  (("heads", heads), ("ffn", ffn), ("layers", layers), ("hidden", hidden)))
    if scope not in SCOPES:
        raise PrunekitError(f"unknown scope {scope!r}; choose local or global")
    if gqa not in GQA_MODES:
        raise PrunekitError(f"unknown gqa mode {gqa!r}; choose groups or heads")
    if not isinstance(round_to, int) or round_to < 1:
        raise PrunekitError(f"round_to must be a positive integer, got {round_to!r}")
    n = num_layers(model)
    plan = StructuredPlan()
    kept_layers = list(range(n))
    if layers > 0:
        check_layers_removable(model)
        if scores.layers is None or scores.layers.numel() != n:
            raise PrunekitError("a layers ratio needs one score per layer (prunekit.importance.groups.layer_scores)")
        n_keep = n - int(round(layers * n))
        if n_keep < 1:
            raise PrunekitError(f"layers={layers} would remove every one of the {n} layers")
        kept_layers = top_indices(scores.layers, n_keep)
        plan.layers = kept_layers
    if heads > 0:
        plan.heads = _plan_heads(model, scores, heads, scope, gqa, kept_layers)
    if ffn > 0:
        units = {i: _need(scores.ffn, i, ffn_site(model, i).width, "FFN") for i in kept_layers}
        for i, k in keep_counts(units, ffn, scope).items():
            if k == 0:
                raise PrunekitError(f"ffn={ffn} ({scope}) would remove every FFN neuron of layer {i}; "
                                    "lower the ratio, or remove whole layers with layers=")
            plan.ffn[i] = top_indices(units[i], round_keep(k, units[i].numel(), round_to, f"layer {i} FFN"))
    if hidden > 0:
        size = hidden_sites(model).size
        if scores.hidden is None or scores.hidden.numel() != size:
            raise PrunekitError(f"a hidden ratio needs one score per hidden dim ({size})")
        k = size - int(round(hidden * size))
        if k == 0:
            raise PrunekitError(f"hidden={hidden} would remove the whole hidden width")
        plan.hidden = top_indices(scores.hidden, round_keep(k, size, round_to, "hidden width"))
    return plan


def _plan_heads(model: nn.Module, scores: GroupScores, ratio: float, scope: str, gqa: str,
                kept_layers: list[int]) -> dict[int, list[int]]:
    sites = {i: attn_site(model, i) for i in kept_layers}
    by_group = {i for i, s in sites.items() if s.per_group == 1 or gqa == "groups"}
    out: dict[int, list[int]] = {}
    units = {}
    for i, s in sites.items():
        if i in by_group:
            src = scores.kv if i in scores.kv else scores.heads  # identical for multi-head attention
            units[i] = _need(src, i, s.n_kv, "key/value group" if s.per_group > 1 else "head")
        else:
            units[i] = _need(scores.heads, i, s.n_q, "head")
    counts = keep_counts(units, ratio, scope)
    for i, s in sites.items():
        if counts[i] == 0:
            raise PrunekitError(f"heads={ratio} ({scope}) would remove every attention head of layer {i}; "
                                "lower the ratio, or remove whole layers with layers=")
        if i in by_group:
            groups = torch.tensor(top_indices(units[i], counts[i]))
            out[i] = block_indices(groups, s.per_group).tolist()
            continue
        removed = s.n_q - counts[i]
        if scope == "local" and removed % s.n_kv:
            raise PrunekitError(
                f"heads={ratio} removes {removed} of the {s.n_q} query heads of layer {i}, which cannot be split "
                f"evenly over its {s.n_kv} key/value groups (grouped-query attention keeps the same number per "
                "group); choose a ratio removing a multiple of that many heads, or use gqa='groups'"
            )
        per = int(round(counts[i] / s.n_kv))  # query heads kept in each group (global: rounded)
        if per == 0:
            raise PrunekitError(
                f"heads={ratio} ({scope}) would leave layer {i} fewer query heads ({counts[i]}) than key/value "
                f"groups ({s.n_kv}); grouped-query attention keeps the same number per group: use gqa='groups' "
                "or a lower ratio"
            )
        keep = []
        for g in range(s.n_kv):
            block = units[i][g * s.per_group:(g + 1) * s.per_group]
            keep += [g * s.per_group + j for j in top_indices(block, per)]
        out[i] = sorted(keep)
    return out


def removed_ratios(model: nn.Module, plan: StructuredPlan) -> tuple[dict[int, float], dict[int, float]]:
    """Per layer, the fraction of query heads and of FFN neurons ``plan`` removes (a plan as ratios: what
    ``prunekit search`` plans hold, e.g. the widths global ranking chose)."""
    heads = {i: 1.0 - len(kept) / attn_site(model, i).n_q for i, kept in plan.heads.items()}
    ffn = {i: 1.0 - len(kept) / ffn_site(model, i).width for i, kept in plan.ffn.items()}
    return heads, ffn


def plan_from_layer_ratios(
    model: nn.Module,
    scores: GroupScores,
    heads: Mapping[int, float] | None = None,
    ffn: Mapping[int, float] | None = None,
    layers: list[int] | None = None,
    round_to: int = 1,
    gqa: str = "groups",
) -> StructuredPlan:
    """Like :func:`plan_from_ratios`, but a removed fraction per layer (e.g. from ``prunekit search``).

    Within a layer the lowest-scoring heads / neurons go; ``layers`` lists the blocks to *keep* (None:
    all). A layer missing from ``heads``/``ffn`` keeps everything.
    """
    if gqa not in GQA_MODES:
        raise PrunekitError(f"unknown gqa mode {gqa!r}; choose groups or heads")
    n = num_layers(model)
    plan = StructuredPlan(layers=list(layers) if layers is not None else None)
    kept = set(plan.layers) if plan.layers is not None else set(range(n))
    for what, ratios in (("heads", heads or {}), ("ffn", ffn or {})):
        for layer, r in ratios.items():
            if layer not in range(n):
                raise PrunekitError(f"plan names layer {layer} but the model has {n} layers")
            check_ratio(f"layer {layer} {what}", r)
    for layer, r in sorted((heads or {}).items()):
        if r > 0 and layer in kept:
            plan.heads.update(_plan_heads(model, scores, r, "local", gqa, [layer]))
    for layer, r in sorted((ffn or {}).items()):
        if r <= 0 or layer not in kept:
            continue
        units = _need(scores.ffn, layer, ffn_site(model, layer).width, "FFN")
        k = units.numel() - int(round(r * units.numel()))
        if k == 0:
            raise PrunekitError(f"ffn={r} would remove every FFN neuron of layer {layer}")
        plan.ffn[layer] = top_indices(units, round_keep(k, units.numel(), round_to, f"layer {layer} FFN"))
    return plan

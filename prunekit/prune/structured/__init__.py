"""Structured pruning: which groups exist, which to keep (a plan), and removing the rest for real.

Four granularities, all located through the architecture table (:mod:`prunekit.arch.families`):

- **heads**: a query head's q rows and o input columns (plus its k/v rows in multi-head attention).
  With grouped-query attention (LLaMA/Qwen/Mistral) a key/value head is shared by a *group* of query
  heads, so a plan names the query heads it keeps; a kv head goes when all of its query heads go,
  and every kept group must keep the same number of query heads (the attention kernels repeat each
  kv head ``num_key_value_groups`` times).
- **ffn**: one intermediate neuron: its up (and gate) row and its down column.
- **layers**: whole blocks, renumbered afterwards.
- **hidden**: one model dimension, removed consistently from the embeddings, every residual norm,
  every projection reading or writing the residual stream, and the head (pooler/classifier/LM head;
  a tied LM head stays tied).

Per-layer widths may end up uneven; ``config`` then holds the largest width and
:func:`model_shapes` the true ones (saved beside the weights by :mod:`prunekit.io.shapes`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from prunekit.arch import Family, family_for, transformer_layers
from prunekit.errors import PrunekitError
from prunekit.prune.surgery import (
    Index,
    as_index,
    in_dim,
    in_features,
    is_linear,
    is_norm,
    keep_embedding_dims,
    keep_in_features,
    keep_norm,
    keep_out_features,
    layer_list,
    out_dim,
    out_features,
    remove_layers,
    retie,
    tied_groups,
)

GQA_MODES = ("groups", "heads")
SCOPES = ("local", "global")

# Attention-module attributes that hold head counts/widths in the families we know (set if present).
_Q_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
_Q_WIDTH_ATTRS = ("all_head_size", "split_size")
_HIDDEN_ATTRS = ("hidden_size", "embed_dim", "dim")


# ----------------------------------------------------------------------------------------------
# Where things are
# ----------------------------------------------------------------------------------------------


@dataclass
class AttnSite:
    """One block's attention: modules, qualified names and head layout."""

    layer: int
    attn: nn.Module
    q: nn.Module
    k: nn.Module
    v: nn.Module
    o: nn.Module
    names: dict[str, str]
    fused: bool
    head_dim: int
    n_q: int
    n_kv: int

    @property
    def per_group(self) -> int:
        return self.n_q // self.n_kv


@dataclass
class FfnSite:
    layer: int
    up: nn.Module
    gate: nn.Module | None
    down: nn.Module
    names: dict[str, str]

    @property
    def width(self) -> int:
        return out_features(self.up)


def num_layers(model: nn.Module) -> int:
    return len(layer_list(model)[2])


def _layer(model: nn.Module, layer: int) -> tuple[Family, str, nn.Module]:
    fam = family_for(model)
    prefix, layers = transformer_layers(model)
    if not 0 <= layer < len(layers):
        raise PrunekitError(f"layer {layer} does not exist (the model has {len(layers)} layers)")
    return fam, f"{prefix}.{layer}", layers[layer]


def attn_site(model: nn.Module, layer: int) -> AttnSite:
    fam, prefix, block = _layer(model, layer)
    attn = block.get_submodule(fam.attn)
    head_dim = int(getattr(attn, fam.head_dim_attr))
    q, k, v, o = (block.get_submodule(p) for p in (fam.q, fam.k, fam.v, fam.o))
    names = {n: f"{prefix}.{p}" for n, p in (("q", fam.q), ("k", fam.k), ("v", fam.v), ("o", fam.o))}
    if fam.qkv_fused:
        n_q = n_kv = out_features(q) // 3 // head_dim
    else:
        n_q, n_kv = out_features(q) // head_dim, out_features(k) // head_dim
    if n_kv == 0 or n_q % n_kv:
        raise PrunekitError(f"layer {layer}: {n_q} query heads cannot share {n_kv} key/value heads evenly")
    return AttnSite(layer, attn, q, k, v, o, names, fam.qkv_fused, head_dim, n_q, n_kv)


def ffn_site(model: nn.Module, layer: int) -> FfnSite:
    fam, prefix, block = _layer(model, layer)
    gate = block.get_submodule(fam.ffn_gate) if fam.ffn_gate else None
    names = {"up": f"{prefix}.{fam.ffn_up}", "down": f"{prefix}.{fam.ffn_down}"}
    if fam.ffn_gate:
        names["gate"] = f"{prefix}.{fam.ffn_gate}"
    return FfnSite(layer, block.get_submodule(fam.ffn_up), gate, block.get_submodule(fam.ffn_down), names)


@dataclass
class HiddenSites:
    """Every module that touches the residual stream, by role (qualified name, module)."""

    size: int
    embeddings: list[tuple[str, nn.Module]] = field(default_factory=list)
    norms: list[tuple[str, nn.Module]] = field(default_factory=list)
    reads: list[tuple[str, nn.Module]] = field(default_factory=list)  # input width is hidden
    writes: list[tuple[str, nn.Module]] = field(default_factory=list)  # output width is hidden


def find_module(model: nn.Module, path: str | None) -> tuple[str, nn.Module] | None:
    """A module by path relative to the top model, else to the base model; None if absent."""
    if not path:
        return None
    base = getattr(model, "base_model", model)
    prefix = getattr(model, "base_model_prefix", "") if base is not model else ""
    for root, pre in ((model, ""), (base, f"{prefix}." if prefix else "")):
        try:
            return pre + path, root.get_submodule(path)
        except AttributeError:
            continue
    return None


def hidden_sites(model: nn.Module) -> HiddenSites:
    fam = family_for(model)
    n = num_layers(model)
    sites = HiddenSites(size=in_features(attn_site(model, 0).q))
    seen: set[tuple[int, int]] = set()

    def add(bucket: list[tuple[str, nn.Module]], found: tuple[str, nn.Module] | None, check) -> None:
        if found is not None and check(found[1]) and (id(found[1]), id(bucket)) not in seen:
            seen.add((id(found[1]), id(bucket)))
            bucket.append(found)

    project = find_module(model, fam.embed_project)
    if project is not None and is_linear(project[1]):
        sites.writes.append(project)  # ELECTRA: the stream starts at the projection, not the embeddings
    else:
        for path in (fam.embeddings, *fam.embed_extra):
            add(sites.embeddings, find_module(model, path), lambda m: isinstance(m, nn.Embedding))
        add(sites.norms, find_module(model, fam.embed_norm), is_norm)
    for i in range(n):
        a, f = attn_site(model, i), ffn_site(model, i)
        _, lp, block = _layer(model, i)
        for path in (fam.attn_norm, fam.ffn_norm):
            if path:
                add(sites.norms, (f"{lp}.{path}", block.get_submodule(path)), is_norm)
        for key in ("q",) if a.fused else ("q", "k", "v"):
            add(sites.reads, (a.names[key], getattr(a, key)), is_linear)
        add(sites.writes, (a.names["o"], a.o), is_linear)
        add(sites.reads, (f.names["up"], f.up), is_linear)
        if f.gate is not None:
            add(sites.reads, (f.names["gate"], f.gate), is_linear)
        add(sites.writes, (f.names["down"], f.down), is_linear)
    add(sites.norms, find_module(model, fam.final_norm), is_norm)
    for path in fam.head_inout:
        add(sites.reads, find_module(model, path), is_linear)
        add(sites.writes, find_module(model, path), is_linear)
    for path in fam.head_in:
        add(sites.reads, find_module(model, path), is_linear)
    for path in fam.head_norms:
        add(sites.norms, find_module(model, path), is_norm)
    return sites


def _check_hidden_covered(model: nn.Module, sites: HiddenSites) -> None:
    """Refuse hidden pruning when some module may touch the residual stream but has no rule.

    Inside the blocks every Linear must be a known projection (a BERT decoder's cross-attention is
    not); anywhere else, any parameter with a hidden-sized dimension must be covered.
    """
    fam = family_for(model)
    covered = {id(m) for bucket in (sites.embeddings, sites.norms, sites.reads, sites.writes) for _, m in bucket}
    layers_prefix = transformer_layers(model)[0] + "."
    skip = []
    if find_module(model, fam.embed_project) is not None:  # embeddings live in embedding_size there
        found = find_module(model, fam.embeddings)
        if found:
            skip.append(found[0].rpartition(".")[0] + ".")
    for name, module in model.named_modules():
        if id(module) in covered or any(name.startswith(s) for s in skip):
            continue
        unknown = is_linear(module) and name.startswith(layers_prefix)
        for pname, p in module.named_parameters(recurse=False):
            if unknown or sites.size in p.shape:
                raise PrunekitError(
                    f"hidden-width pruning does not know module {name}.{pname} {tuple(p.shape)}; "
                    "add it to the family's entry in prunekit/arch/families.py"
                )


# ----------------------------------------------------------------------------------------------
# Groups: which slices of which parameters belong together (for scores and masks)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One parameter's share of ``count`` equal groups: group j owns ``offset + j*size ...`` along ``dim``."""

    param: str
    dim: int
    size: int = 1
    offset: int = 0


@dataclass(frozen=True)
class GroupSet:
    """``count`` groups of one kind in one layer (``layer`` is None for the model-wide hidden width)."""

    kind: str
    layer: int | None
    count: int
    parts: tuple[Part, ...]


def _rows(name: str, module: nn.Module, size: int, offset: int = 0) -> list[Part]:
    parts = [Part(f"{name}.weight", out_dim(module), size, offset)]
    if getattr(module, "bias", None) is not None:
        parts.append(Part(f"{name}.bias", 0, size, offset))
    return parts


def _cols(name: str, module: nn.Module, size: int, offset: int = 0) -> list[Part]:
    return [Part(f"{name}.weight", in_dim(module), size, offset)]


@dataclass(frozen=True)
class HeadGroups:
    """A layer's attention groups: per query head, and per key/value head (with all its query heads)."""

    layer: int
    heads: GroupSet
    kv: GroupSet
    per_group: int


def head_groups(model: nn.Module) -> list[HeadGroups]:
    out = []
    for i in range(num_layers(model)):
        s = attn_site(model, i)
        d, g = s.head_dim, s.per_group
        if s.fused:  # GPT-2: [q | k | v] side by side in one Conv1D
            w = s.n_q * d
            qkv = [p for off in (0, w, 2 * w) for p in _rows(s.names["q"], s.q, d, off)]
            heads = GroupSet("heads", i, s.n_q, (*qkv, *_cols(s.names["o"], s.o, d)))
            out.append(HeadGroups(i, heads, heads, 1))
            continue
        q, o = _rows(s.names["q"], s.q, d), _cols(s.names["o"], s.o, d)
        kv = _rows(s.names["k"], s.k, d) + _rows(s.names["v"], s.v, d)
        if g == 1:
            heads = GroupSet("heads", i, s.n_q, (*q, *kv, *o))
            out.append(HeadGroups(i, heads, heads, 1))
        else:
            heads = GroupSet("heads", i, s.n_q, (*q, *o))
            groups = GroupSet("kv", i, s.n_kv, (*kv, *_rows(s.names["q"], s.q, g * d),
                                                *_cols(s.names["o"], s.o, g * d)))
            out.append(HeadGroups(i, heads, groups, g))
    return out


def ffn_groups(model: nn.Module) -> list[GroupSet]:
    out = []
    for i in range(num_layers(model)):
        f = ffn_site(model, i)
        parts = _rows(f.names["up"], f.up, 1)
        if f.gate is not None:
            parts += _rows(f.names["gate"], f.gate, 1)
        out.append(GroupSet("ffn", i, f.width, (*parts, *_cols(f.names["down"], f.down, 1))))
    return out


def hidden_groups(model: nn.Module) -> GroupSet:
    s = hidden_sites(model)
    parts: list[Part] = [Part(f"{n}.weight", 1) for n, _ in s.embeddings]
    for n, m in s.norms:
        parts += [Part(f"{n}.{p}", 0) for p in ("weight", "bias") if isinstance(getattr(m, p, None), Tensor)]
    for n, m in s.reads:
        parts += _cols(n, m, 1)
    for n, m in s.writes:
        parts += _rows(n, m, 1)
    return GroupSet("hidden", None, s.size, tuple(parts))


# ----------------------------------------------------------------------------------------------
# Per-module surgery with the model's bookkeeping
# ----------------------------------------------------------------------------------------------


def _span(idx: Tensor, size: int) -> Tensor:
    """Element indices of whole blocks ``idx`` of ``size`` (head i -> i*size ... i*size+size-1)."""
    return (idx[:, None] * size + torch.arange(size)).flatten()


def _kv_keep(site: AttnSite, keep: Tensor) -> Tensor:
    """The kv heads that stay for query heads ``keep``; GQA needs the same count in every kept group."""
    counts = torch.bincount(keep // site.per_group, minlength=site.n_kv)
    kept = counts.nonzero().flatten()
    if counts[kept].unique().numel() > 1:
        raise PrunekitError(
            f"layer {site.layer}: grouped-query attention needs the same number of query heads in every kept "
            f"key/value group (query heads per group would be {counts.tolist()}); keep whole groups or "
            "the same number per group"
        )
    return kept


def _check_heads(model: nn.Module, layer: int, keep_heads: Index) -> tuple[AttnSite, Tensor, Tensor]:
    site = attn_site(model, layer)
    keep = as_index(keep_heads, site.n_q, f"layer {layer}: attention heads")
    return site, keep, _kv_keep(site, keep)


def _set_int_attrs(module: nn.Module, names: tuple[str, ...], value: int) -> None:
    for name in names:
        if isinstance(getattr(module, name, None), int) and not isinstance(getattr(module, name), bool):
            setattr(module, name, value)


def prune_heads(model: nn.Module, layer_idx: int, keep_heads: Index) -> nn.Module:
    """Keep query heads ``keep_heads`` of one layer (and the kv heads they use); the rest are removed."""
    site, keep, kv = _check_heads(model, layer_idx, keep_heads)
    _prune_heads(site, keep, kv)
    sync_config(model)
    return model


def _prune_heads(site: AttnSite, keep: Tensor, kv: Tensor) -> None:
    d = site.head_dim
    q_idx, kv_idx = _span(keep, d), _span(kv, d)
    if site.fused:
        w = site.n_q * d
        keep_out_features(site.q, torch.cat([q_idx, w + q_idx, 2 * w + q_idx]))
    else:
        keep_out_features(site.q, q_idx)
        keep_out_features(site.k, kv_idx)
        keep_out_features(site.v, kv_idx)
    keep_in_features(site.o, q_idx)
    _set_int_attrs(site.attn, _Q_COUNT_ATTRS, keep.numel())
    _set_int_attrs(site.attn, _Q_WIDTH_ATTRS, keep.numel() * d)
    _set_int_attrs(site.attn, ("num_key_value_heads",), kv.numel())
    _set_int_attrs(site.attn, ("num_key_value_groups",), keep.numel() // kv.numel())


def prune_ffn(model: nn.Module, layer_idx: int, keep_neurons: Index) -> nn.Module:
    """Keep intermediate neurons ``keep_neurons`` of one layer (up and gate rows, down columns)."""
    site = ffn_site(model, layer_idx)
    keep = as_index(keep_neurons, site.width, f"layer {layer_idx}: FFN neurons")
    _prune_ffn(model, site, keep)
    sync_config(model)
    return model


def _prune_ffn(model: nn.Module, site: FfnSite, keep: Tensor) -> None:
    keep_out_features(site.up, keep)
    if site.gate is not None:
        keep_out_features(site.gate, keep)
    keep_in_features(site.down, keep)
    parent = model.get_submodule(site.names["up"].rpartition(".")[0])
    _set_int_attrs(parent, ("intermediate_size",), keep.numel())


def prune_hidden(model: nn.Module, keep_dims: Index) -> nn.Module:
    """Keep model dimensions ``keep_dims`` everywhere the residual stream goes (see module docstring)."""
    sites = hidden_sites(model)
    keep = as_index(keep_dims, sites.size, "hidden dims")
    _check_hidden_covered(model, sites)
    _prune_hidden(model, sites, keep)
    sync_config(model)
    return model


def _prune_hidden(model: nn.Module, sites: HiddenSites, keep: Tensor) -> None:
    ties = tied_groups(model)
    for _, emb in sites.embeddings:
        keep_embedding_dims(emb, keep)
    for _, norm in sites.norms:
        keep_norm(norm, keep)
    for _, lin in sites.reads:
        keep_in_features(lin, keep)
    for _, lin in sites.writes:
        keep_out_features(lin, keep)
    retie(ties)
    for module in model.modules():
        for name in _HIDDEN_ATTRS:
            if getattr(module, name, None) == sites.size and isinstance(getattr(module, name), int):
                setattr(module, name, keep.numel())


def prune_layers(model: nn.Module, keep_layers: Index) -> nn.Module:
    """Keep blocks ``keep_layers`` (original order) and renumber them; see :func:`surgery.remove_layers`."""
    remove_layers(model, keep_layers)
    sync_config(model)
    return model


# ----------------------------------------------------------------------------------------------
# Shapes and config
# ----------------------------------------------------------------------------------------------


def model_shapes(model: nn.Module) -> dict[str, Any]:
    """The true per-layer widths: what a loader needs to rebuild an unevenly pruned model."""
    fam = family_for(model)
    layers = []
    for i in range(num_layers(model)):
        a, f = attn_site(model, i), ffn_site(model, i)
        scaling = getattr(a.attn, "scaling", None)
        layers.append({"q_heads": a.n_q, "kv_heads": a.n_kv, "head_dim": a.head_dim, "ffn": f.width,
                       "scaling": float(scaling) if isinstance(scaling, (int, float)) else None})
    return {"family": fam.name, "model_type": model.config.model_type,
            "hidden_size": hidden_sites(model).size, "num_layers": len(layers), "layers": layers}


def is_uniform(shapes: Mapping[str, Any]) -> bool:
    """Every layer has the same head counts, head size and FFN width."""
    keys = ("q_heads", "kv_heads", "head_dim", "ffn")
    return len({tuple(layer[k] for k in keys) for layer in shapes["layers"]}) <= 1


def sync_config(model: nn.Module) -> None:
    """Write the model's real widths into its config (the largest per-layer width when uneven).

    When widths are uneven the config values are placeholders that still pass the config's own
    validation (LLaMA requires hidden_size % num_attention_heads == 0), so ``save_pretrained``
    works; the true shapes come from :func:`model_shapes`.
    """
    fam = family_for(model)
    config = model.config
    shapes = model_shapes(model)
    layers = shapes["layers"]
    config.hidden_size = shapes["hidden_size"]
    if config.num_hidden_layers != shapes["num_layers"]:
        config.num_hidden_layers = shapes["num_layers"]
    setattr(config, fam.ffn_config_attr, max(x["ffn"] for x in layers))
    if getattr(config, "head_dim", None) is not None:
        config.head_dim = layers[0]["head_dim"]
    max_q, max_kv = max(x["q_heads"] for x in layers), max(x["kv_heads"] for x in layers)
    candidates = [(max_q, max_kv)] + [(q, math.gcd(q, max_kv)) for q in range(max_q, 0, -1)]
    for q, kv in candidates:
        config.num_attention_heads = q
        if fam.num_kv_heads_attr:
            setattr(config, fam.num_kv_heads_attr, kv)
        if _config_valid(config):
            break
    else:  # nothing validates (for another reason): keep the honest maxima
        config.num_attention_heads = max_q
        if fam.num_kv_heads_attr:
            setattr(config, fam.num_kv_heads_attr, max_kv)


def _config_valid(config: Any) -> bool:
    validate = getattr(config, "validate", None)
    if validate is None:
        return True
    try:
        validate()
    except Exception:  # noqa: BLE001 - any validator failure means "try the next placeholder"
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------------------------


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
class _Checked:
    heads: dict[int, tuple[Tensor, Tensor]]
    ffn: dict[int, Tensor]
    layers: Tensor | None
    hidden: Tensor | None


def _check_plan(model: nn.Module, plan: StructuredPlan) -> _Checked:
    """Validate the whole plan before anything changes, so a bad plan leaves the model untouched."""
    n = num_layers(model)
    layers = as_index(plan.layers, n, "layers") if plan.layers is not None else None
    kept = set(layers.tolist()) if layers is not None else set(range(n))
    heads, ffn = {}, {}
    for layer, keep in sorted(plan.heads.items()):
        if layer not in range(n):
            raise PrunekitError(f"plan names layer {layer} but the model has {n} layers")
        if layer in kept:
            _, k, kv = _check_heads(model, layer, keep)
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
        _check_hidden_covered(model, sites)
    return _Checked(heads, ffn, layers, hidden)


def apply_plan(model: nn.Module, plan: StructuredPlan) -> nn.Module:
    """Physically remove everything the plan does not keep (in place); returns the model."""
    c = _check_plan(model, plan)
    for layer, (keep, kv) in c.heads.items():
        _prune_heads(attn_site(model, layer), keep, kv)
    for layer, keep in c.ffn.items():
        _prune_ffn(model, ffn_site(model, layer), keep)
    if c.hidden is not None:
        _prune_hidden(model, hidden_sites(model), c.hidden)
    if c.layers is not None:
        remove_layers(model, c.layers)
    sync_config(model)
    return model


# ----------------------------------------------------------------------------------------------
# The masked reference
# ----------------------------------------------------------------------------------------------


def skip_layer(layer: nn.Module) -> RemovableHandle:
    """Make a block return its input unchanged (a forward hook), without removing it."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        hs = args[0] if args else kwargs["hidden_states"]
        if isinstance(output, tuple):
            return (hs, *output[1:])
        return hs

    return layer.register_forward_hook(hook, with_kwargs=True)


class KeptDimsLayerNorm(nn.Module):
    """LayerNorm whose mean and variance are taken over the kept dims only; removed dims output 0.

    The exact masked stand-in for a narrower LayerNorm: plain zeroing cannot be exact, because a
    LayerNorm's mean and variance are averages over the full width.
    """

    def __init__(self, norm: nn.LayerNorm, keep: Tensor) -> None:
        super().__init__()
        self.norm, self.keep = norm, keep

    def forward(self, x: Tensor) -> Tensor:
        k = self.keep.to(x.device)
        w = self.norm.weight[k] if self.norm.weight is not None else None
        b = self.norm.bias[k] if self.norm.bias is not None else None
        out = torch.zeros_like(x)
        out[..., k] = F.layer_norm(x[..., k], (k.numel(),), w, b, self.norm.eps)
        return out


@torch.no_grad()
def _zero(module: nn.Module, dim: int, idx: Tensor, bias: bool) -> None:
    if idx.numel() == 0:
        return
    module.weight.index_fill_(dim, idx.to(module.weight.device), 0.0)
    if bias and getattr(module, "bias", None) is not None:
        module.bias.index_fill_(0, idx.to(module.bias.device), 0.0)


def _removed(keep: Tensor, size: int) -> Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[keep] = False
    return mask.nonzero().flatten()


@torch.no_grad()
def structured_masks(model: nn.Module, plan: StructuredPlan) -> nn.Module:
    """A copy of ``model`` whose outputs equal ``apply_plan(model, plan)``'s, with every shape unchanged.

    - heads / FFN neurons: the o / down input columns of removed groups are zeroed. This is exact: a
      removed head's (or neuron's) output only reaches the residual stream through those columns.
    - layers: removed blocks return their input unchanged (:func:`skip_layer`).
    - hidden width: removed dims are zeroed in the embeddings, in the output rows (and biases) of
      every module writing the residual stream and in the input columns of every module reading it,
      so they stay exactly 0 all the way. Norms need more, because their statistics average over
      the width: an RMSNorm becomes exact by zeroing the removed weights, scaling the kept ones by
      sqrt(H'/H) and its epsilon by H'/H (then rsqrt(sum/H + eps·H'/H)·sqrt(H'/H) = rsqrt(sum/H' + eps));
      no parameter change makes a LayerNorm exact (its mean shifts every kept dim), so each is swapped
      for a :class:`KeptDimsLayerNorm` taking its statistics over the kept dims.
    """
    c = _check_plan(model, plan)
    ref = copy.deepcopy(model)
    for layer, (keep, _) in c.heads.items():
        site = attn_site(ref, layer)
        _zero(site.o, in_dim(site.o), _span(_removed(keep, site.n_q), site.head_dim), bias=False)
    for layer, keep in c.ffn.items():
        site = ffn_site(ref, layer)
        _zero(site.down, in_dim(site.down), _removed(keep, site.width), bias=False)
    if c.hidden is not None:
        _mask_hidden(ref, c.hidden)
    if c.layers is not None:
        blocks = layer_list(ref)[2]
        for i in _removed(c.layers, len(blocks)).tolist():
            skip_layer(blocks[i])
    return ref


def _mask_hidden(ref: nn.Module, keep: Tensor) -> None:
    sites = hidden_sites(ref)
    size = sites.size
    gone = _removed(keep, size)
    for _, emb in sites.embeddings:
        _zero(emb, 1, gone, bias=False)
    for _, lin in sites.writes:
        _zero(lin, out_dim(lin), gone, bias=True)
    for _, lin in sites.reads:
        _zero(lin, in_dim(lin), gone, bias=False)
    ratio = keep.numel() / size
    for name, norm in sites.norms:
        if isinstance(norm, nn.LayerNorm):
            parent, _, attr = name.rpartition(".")
            setattr(ref.get_submodule(parent) if parent else ref, attr, KeptDimsLayerNorm(norm, keep))
            continue
        eps_attr = "variance_epsilon" if hasattr(norm, "variance_epsilon") else "eps"
        eps = getattr(norm, eps_attr, None)
        if eps is None:
            eps = torch.finfo(norm.weight.dtype).eps
        setattr(norm, eps_attr, eps * ratio)
        norm.weight.mul_(math.sqrt(ratio))
        norm.weight.index_fill_(0, gone.to(norm.weight.device), 0.0)


# ----------------------------------------------------------------------------------------------
# From scores and ratios to a plan
# ----------------------------------------------------------------------------------------------


@dataclass
class GroupScores:
    """Importance per group (higher = keep), as computed by :mod:`prunekit.importance.groups`."""

    heads: dict[int, Tensor] = field(default_factory=dict)  # layer -> one score per query head
    kv: dict[int, Tensor] = field(default_factory=dict)  # layer -> one per kv head (with its query heads)
    ffn: dict[int, Tensor] = field(default_factory=dict)  # layer -> one per neuron
    hidden: Tensor | None = None  # one per model dimension
    layers: Tensor | None = None  # one per layer
    units: dict[str, Tensor] = field(default_factory=dict)  # text models: group name -> one per unit/filter/dim


def _check_ratio(name: str, r: float) -> float:
    if not 0.0 <= r <= 1.0:
        raise PrunekitError(f"{name} ratio must be in [0, 1], got {r}")
    return float(r)


def _top(scores: Tensor, k: int) -> list[int]:
    """Indices of the k highest scores, ascending; ties keep the lower index (deterministic)."""
    order = torch.sort(scores.detach().float().cpu(), descending=True, stable=True).indices[:k]
    return sorted(order.tolist())


def _round_keep(k: int, total: int, n: int, what: str) -> int:
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


def _keep_counts(units: dict[int, Tensor], ratio: float, scope: str) -> dict[int, int]:
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
    heads, ffn, layers, hidden = (_check_ratio(n, r) for n, r in
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
        if scores.layers is None or scores.layers.numel() != n:
            raise PrunekitError("a layers ratio needs one score per layer (prunekit.importance.groups.layer_scores)")
        n_keep = n - int(round(layers * n))
        if n_keep < 1:
            raise PrunekitError(f"layers={layers} would remove every one of the {n} layers")
        kept_layers = _top(scores.layers, n_keep)
        plan.layers = kept_layers
    if heads > 0:
        plan.heads = _plan_heads(model, scores, heads, scope, gqa, kept_layers)
    if ffn > 0:
        units = {i: _need(scores.ffn, i, ffn_site(model, i).width, "FFN") for i in kept_layers}
        for i, k in _keep_counts(units, ffn, scope).items():
            if k == 0:
                raise PrunekitError(f"ffn={ffn} ({scope}) would remove every FFN neuron of layer {i}; "
                                    "lower the ratio, or remove whole layers with layers=")
            plan.ffn[i] = _top(units[i], _round_keep(k, units[i].numel(), round_to, f"layer {i} FFN"))
    if hidden > 0:
        size = hidden_sites(model).size
        if scores.hidden is None or scores.hidden.numel() != size:
            raise PrunekitError(f"a hidden ratio needs one score per hidden dim ({size})")
        k = size - int(round(hidden * size))
        if k == 0:
            raise PrunekitError(f"hidden={hidden} would remove the whole hidden width")
        plan.hidden = _top(scores.hidden, _round_keep(k, size, round_to, "hidden width"))
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
    counts = _keep_counts(units, ratio, scope)
    for i, s in sites.items():
        if counts[i] == 0:
            raise PrunekitError(f"heads={ratio} ({scope}) would remove every attention head of layer {i}; "
                                "lower the ratio, or remove whole layers with layers=")
        if i in by_group:
            groups = torch.tensor(_top(units[i], counts[i]))
            out[i] = _span(groups, s.per_group).tolist()
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
            keep += [g * s.per_group + j for j in _top(block, per)]
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
            _check_ratio(f"layer {layer} {what}", r)
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
        plan.ffn[layer] = _top(units, _round_keep(k, units.numel(), round_to, f"layer {layer} FFN"))
    return plan

"""Where structured pruning acts: each block's attention and FFN, and every module on the residual stream.

Located through the architecture table (:mod:`prunekit.arch.families`), never by module type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from prunekit.arch.families import Family, family_for, transformer_layers
from prunekit.arch.modules import in_features, is_linear, is_norm, layer_list, out_features
from prunekit.errors import PrunekitError


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
    extra: dict[str, nn.Module] = field(default_factory=dict)  # the family's ``head_extra``, by qualified name
    bias_arg: str | None = None  # the family's ``head_bias_arg`` (:mod:`prunekit.arch.headbias`)

    @property
    def per_group(self) -> int:
        return self.n_q // self.n_kv


@dataclass
class FfnSite:
    """One block's FFN: its projections, their qualified names, and ``owner``, the module holding them
    (where a family keeps its FFN width attribute, :data:`prunekit.arch.attributes.FFN_WIDTH`)."""

    layer: int
    up: nn.Module
    gate: nn.Module | None
    down: nn.Module
    names: dict[str, str]
    owner: nn.Module
    fused: bool = False  # ``up`` holds the up rows and the gate rows as two halves (``gate`` is None)

    @property
    def width(self) -> int:
        return out_features(self.up) // (2 if self.fused else 1)


def num_layers(model: nn.Module) -> int:
    return len(layer_list(model)[2])


def _layer(model: nn.Module, layer: int) -> tuple[Family, str, nn.Module]:
    fam = family_for(model)
    groups = getattr(model.config, fam.shared_layers, 1) if fam.shared_layers else 1
    if groups != 1:
        raise PrunekitError(f"structured pruning of {fam.name} handles one shared layer group; this model has "
                            f"{fam.shared_layers}={groups} (unstructured pruning works)")
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
    extra = {f"{prefix}.{p}": m for p in fam.head_extra if (m := _optional(block, p)) is not None}
    return AttnSite(layer, attn, q, k, v, o, names, fam.qkv_fused, head_dim, n_q, n_kv, extra,
                   fam.head_bias_arg)


def _optional(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def check_layers_removable(model: nn.Module) -> None:
    """Refuse removing blocks of a family whose blocks are reused by every pass (ALBERT): a block is not
    one layer of the computation but all of them, and dropping passes would change every pass's input."""
    fam = family_for(model)
    if fam.shared_layers:
        passes = getattr(model.config, "num_hidden_layers", "?")
        raise PrunekitError(
            f"{fam.name} reuses its shared layers in all {passes} passes, so no single layer can be removed; "
            "prune heads, FFN neurons or the hidden width (they shrink the shared layer, hence every pass)"
        )


def ffn_site(model: nn.Module, layer: int) -> FfnSite:
    fam, prefix, block = _layer(model, layer)
    gate = block.get_submodule(fam.ffn_gate) if fam.ffn_gate else None
    names = {"up": f"{prefix}.{fam.ffn_up}", "down": f"{prefix}.{fam.ffn_down}"}
    if fam.ffn_gate:
        names["gate"] = f"{prefix}.{fam.ffn_gate}"
    owner = block.get_submodule(fam.ffn_up.rpartition(".")[0])
    return FfnSite(layer, block.get_submodule(fam.ffn_up), gate, block.get_submodule(fam.ffn_down), names, owner,
                   fam.ffn_fused)


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
        for name, module in a.extra.items():
            add(sites.reads, (name, module), is_linear)
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
    for path in (*fam.head_norms, *fam.stream_norms):
        add(sites.norms, find_module(model, path), is_norm)
    return sites


def check_hidden_covered(model: nn.Module, sites: HiddenSites) -> None:
    """Refuse hidden pruning when some module may touch the residual stream but has no rule.

    Inside the blocks every Linear must be a known projection (a BERT decoder's cross-attention is
    not); anywhere else, any parameter with a hidden-sized dimension must be covered.
    """
    fam = family_for(model)
    if fam.no_hidden:
        raise PrunekitError(f"hidden-width pruning is not supported for {fam.name} models: {fam.no_hidden}")
    covered = {id(m) for bucket in (sites.embeddings, sites.norms, sites.reads, sites.writes) for _, m in bucket}
    bias = find_module(model, fam.head_bias)  # (buckets, heads): a bucket count may equal the hidden width
    if bias is not None:
        covered.add(id(bias[1]))
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


def block_indices(idx: Tensor, size: int) -> Tensor:
    """Element indices of whole blocks ``idx`` of ``size`` (head i -> i*size ... i*size+size-1)."""
    return (idx[:, None] * size + torch.arange(size)).flatten()

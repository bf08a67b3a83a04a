"""Removing heads, FFN neurons, hidden dims and layers for real, with the model's bookkeeping."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prunekit.arch.attributes import FFN_WIDTH, HIDDEN_WIDTH, set_head_counts, set_int_attrs
from prunekit.arch.headbias import select_bias_heads
from prunekit.arch.sites import (
    AttnSite,
    FfnSite,
    HiddenSites,
    attn_site,
    block_indices,
    check_hidden_covered,
    ffn_site,
    hidden_sites,
)
from prunekit.errors import PrunekitError
from prunekit.prune.structured.shapes import sync_config
from prunekit.prune.surgery import (
    Index,
    as_index,
    keep_embedding_dims,
    keep_in_features,
    keep_norm,
    keep_out_features,
    remove_layers,
    retie,
    tied_groups,
)


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


def check_heads(model: nn.Module, layer: int, keep_heads: Index) -> tuple[AttnSite, Tensor, Tensor]:
    site = attn_site(model, layer)
    keep = as_index(keep_heads, site.n_q, f"layer {layer}: attention heads")
    return site, keep, _kv_keep(site, keep)


def prune_heads(model: nn.Module, layer_idx: int, keep_heads: Index) -> nn.Module:
    """Keep query heads ``keep_heads`` of one layer (and the kv heads they use); the rest are removed."""
    site, keep, kv = check_heads(model, layer_idx, keep_heads)
    remove_heads(site, keep, kv)
    sync_config(model)
    return model


def remove_heads(site: AttnSite, keep: Tensor, kv: Tensor) -> None:
    d = site.head_dim
    q_idx, kv_idx = block_indices(keep, d), block_indices(kv, d)
    if site.fused:
        w = site.n_q * d
        keep_out_features(site.q, torch.cat([q_idx, w + q_idx, 2 * w + q_idx]))
    else:
        keep_out_features(site.q, q_idx)
        keep_out_features(site.k, kv_idx)
        keep_out_features(site.v, kv_idx)
    for module in site.extra.values():
        keep_out_features(module, q_idx)
    keep_in_features(site.o, q_idx)
    if site.bias_arg:
        select_bias_heads(site.attn, keep, site.bias_arg)
    set_head_counts(site.attn, keep.numel(), kv.numel(), d)


def prune_ffn(model: nn.Module, layer_idx: int, keep_neurons: Index) -> nn.Module:
    """Keep intermediate neurons ``keep_neurons`` of one layer (up and gate rows, down columns)."""
    site = ffn_site(model, layer_idx)
    keep = as_index(keep_neurons, site.width, f"layer {layer_idx}: FFN neurons")
    remove_ffn(site, keep)
    sync_config(model)
    return model


def remove_ffn(site: FfnSite, keep: Tensor) -> None:
    keep_out_features(site.up, torch.cat([keep, site.width + keep]) if site.fused else keep)
    if site.gate is not None:
        keep_out_features(site.gate, keep)
    keep_in_features(site.down, keep)
    set_int_attrs(site.owner, FFN_WIDTH, keep.numel())


def prune_hidden(model: nn.Module, keep_dims: Index) -> nn.Module:
    """Keep model dimensions ``keep_dims`` everywhere the residual stream goes (see module docstring)."""
    sites = hidden_sites(model)
    keep = as_index(keep_dims, sites.size, "hidden dims")
    check_hidden_covered(model, sites)
    remove_hidden(model, sites, keep)
    sync_config(model)
    return model


def remove_hidden(model: nn.Module, sites: HiddenSites, keep: Tensor) -> None:
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
        for name in HIDDEN_WIDTH:
            if getattr(module, name, None) == sites.size and isinstance(getattr(module, name), int):
                setattr(module, name, keep.numel())


def prune_layers(model: nn.Module, keep_layers: Index) -> nn.Module:
    """Keep blocks ``keep_layers`` (original order) and renumber them; see :func:`surgery.remove_layers`."""
    remove_layers(model, keep_layers)
    sync_config(model)
    return model

"""The masked reference: a same-shape copy that computes exactly what the pruned model computes."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.arch.modules import in_dim, layer_list, out_dim
from prunekit.arch.modules import skip_layer as skip_layer  # re-exported: it lives with the other module helpers
from prunekit.arch.sites import attn_site, block_indices, ffn_site, hidden_sites
from prunekit.prune.structured.plan import StructuredPlan, checked_plan


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
    c = checked_plan(model, plan)
    ref = copy.deepcopy(model)
    for layer, (keep, _) in c.heads.items():
        site = attn_site(ref, layer)
        _zero(site.o, in_dim(site.o), block_indices(_removed(keep, site.n_q), site.head_dim), bias=False)
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

"""A per-head attention bias that every layer shares (MPNet's relative position bias), after head pruning.

The encoder computes the bias once, for all heads of its table, and hands the same tensor to every layer;
a layer that keeps fewer heads must add only its own heads' slices. Such an attention module remembers its
kept heads (original indices into the table) and a forward pre-hook selects them from the incoming bias,
so the table stays whole and each layer may keep different heads. Saved per layer in the shapes manifest.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

_HEADS = "_prunekit_bias_heads"  # plain attributes (not buffers), so the state dict keeps its vanilla keys
_ARG = "_prunekit_bias_arg"


def bias_heads(attn: nn.Module) -> list[int] | None:
    """The table heads ``attn`` adds, in its head order; None while it adds them all."""
    return getattr(attn, _HEADS, None)


def select_bias_heads(attn: nn.Module, keep: Tensor | list[int], arg: str) -> None:
    """Make ``attn`` add only heads ``keep`` (indices into its current heads) of the bias passed as ``arg``."""
    keep = [int(k) for k in keep]
    old = bias_heads(attn)
    setattr(attn, _HEADS, keep if old is None else [old[k] for k in keep])
    if old is None:
        setattr(attn, _ARG, arg)
        attn.register_forward_pre_hook(_select, with_kwargs=True)


def _select(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """Reads its state from ``module`` (never a closure), so a deep copy of the model selects for itself."""
    name, keep = getattr(module, _ARG), getattr(module, _HEADS)
    if name in kwargs:
        kwargs = {**kwargs, name: _slice(kwargs[name], keep)}
    else:
        pos = list(inspect.signature(module.forward).parameters).index(name)
        if pos < len(args):
            args = (*args[:pos], _slice(args[pos], keep), *args[pos + 1:])
    return args, kwargs


def _slice(bias: Tensor | None, keep: list[int]) -> Tensor | None:
    if bias is None:
        return None
    return bias.index_select(1, torch.tensor(keep, device=bias.device))  # (batch, heads, query, key)

"""Low-rank factorisation: each chosen Linear W (out × in) becomes two thinner ones, U·V, from its SVD.

W ≈ (U_r·Σ_r)·V_rᵀ keeps the r largest singular values (the best rank-r approximation in Frobenius norm,
Eckart–Young). The layer then costs r·(in + out) weights instead of in·out, so it is only worth it when
r < in·out / (in + out). The rank is chosen per layer, either

- ``ratio``: keep this fraction of the layer's *weights*, r = ⌊ratio · in·out / (in + out)⌋, so a
  ratio of 0.5 halves every factorised layer's size and MACs; or
- ``energy``: the smallest r whose singular values hold this fraction of Σσ² (the squared Frobenius
  norm), so layers with a fast-decaying spectrum get a small rank and others keep more.

A layer whose chosen rank would not make it smaller is left alone. Factorised layers are
:class:`LowRankLinear` modules; :mod:`prunekit.io.shapes` records their ranks in the shapes manifest,
so :func:`prunekit.load` rebuilds the same modules and reproduces the same outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prunekit.arch import prunable_modules
from prunekit.errors import PrunekitError
from prunekit.models.lowrank import LowRankLinear, apply_low_rank_shapes, low_rank_ranks, replace_module

# LowRankLinear and the manifest's half (low_rank_ranks, apply_low_rank_shapes) live in prunekit.models.lowrank,
# below io, which saves and rebuilds them; they are re-exported here, where factorising happens.
__all__ = ["LowRankLinear", "LowRankSettings", "apply_low_rank_shapes", "choose_rank", "factorize",
           "low_rank_factorize", "low_rank_ranks"]


@dataclass(frozen=True)
class LowRankSettings:
    """``ratio`` (fraction of each layer's weights kept) or ``energy`` (fraction of Σσ² kept), not both."""

    ratio: float | None = None
    energy: float | None = None
    prunable: str | None = None  # regex of module names (default: every Linear in the transformer blocks)
    exclude: str | None = None

    def validate(self) -> LowRankSettings:
        if (self.ratio is None) == (self.energy is None):
            raise PrunekitError("low-rank factorisation needs exactly one of ratio (fraction of weights kept) "
                                "or energy (fraction of squared singular values kept)")
        value, name = (self.ratio, "ratio") if self.ratio is not None else (self.energy, "energy")
        if not 0.0 < value < 1.0:
            raise PrunekitError(f"low-rank {name} must be in (0, 1), got {value}")
        return self


def choose_rank(singular_values: Tensor, in_features: int, out_features: int, settings: LowRankSettings) -> int:
    """The rank for one layer (see the module docstring); at least 1."""
    if settings.ratio is not None:
        return max(1, math.floor(settings.ratio * in_features * out_features / (in_features + out_features)))
    energy = singular_values.double().pow(2)
    cumulative = energy.cumsum(0) / energy.sum().clamp_min(1e-30)
    return int(torch.searchsorted(cumulative, torch.tensor(float(settings.energy), dtype=torch.float64)).item()) + 1


def factorize(linear: nn.Linear, rank: int) -> LowRankLinear:
    """The rank-``rank`` truncated SVD of ``linear`` as a :class:`LowRankLinear` (√Σ split over both factors,
    so the two weights have similar scales for fine-tuning)."""
    w = linear.weight.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    out = LowRankLinear(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
    out.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        out.down.weight.copy_((root[:, None] * vh[:rank]).to(linear.weight.dtype))
        out.up.weight.copy_((u[:, :rank] * root[None, :]).to(linear.weight.dtype))
        if linear.bias is not None:
            out.up.bias.copy_(linear.bias)
    return out


def low_rank_factorize(model: nn.Module, settings: LowRankSettings) -> dict[str, dict[str, float | int]]:
    """Factorise the chosen Linear layers of ``model`` in place.

    Returns, per factorised module, ``{"rank", "in", "out", "energy"}`` (energy = fraction of Σσ² kept);
    layers where factorising would not save weights are skipped and not listed.
    """
    settings = settings.validate()
    chosen = {n: m for n, m in prunable_modules(model, settings.prunable, settings.exclude).items()
              if isinstance(m, nn.Linear)}
    if not chosen:
        raise PrunekitError("no Linear layers to factorise (check prunable / exclude)")
    done: dict[str, dict[str, float | int]] = {}
    for name, linear in chosen.items():
        s = torch.linalg.svdvals(linear.weight.detach().double())
        rank = choose_rank(s, linear.in_features, linear.out_features, settings)
        if rank * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
            continue
        energy = float(s[:rank].pow(2).sum() / s.pow(2).sum().clamp_min(1e-30))
        replace_module(model, name, factorize(linear, rank))
        done[name] = {"rank": rank, "in": linear.in_features, "out": linear.out_features, "energy": energy}
    return done

"""Unstructured masks: turn scores into keep/prune decisions and hold them through training.

Pruned weights stay *exactly* zero: after every optimizer step the mask is re-applied, and when a
mask changes the optimizer's moment estimates for the newly pruned weights are zeroed too, so Adam's
momentum cannot push a pruned weight back (weight decay of a zero is zero).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError

SCOPES = ("global", "local", "row")


def check_sparsity(sparsity: float) -> float:
    """Sparsity is the fraction of weights removed: [0, 1), since 1 would delete the whole layer."""
    if not 0.0 <= sparsity < 1.0:
        raise PrunekitError(f"sparsity must be in [0, 1), got {sparsity}")
    return float(sparsity)


def compute_masks(
    scores: Mapping[str, Tensor],
    sparsity: float | None = None,
    *,
    scope: str = "global",
    threshold: float | None = None,
    previous: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Boolean keep-masks (True = keep) from importance scores.

    - ``sparsity``: prune exactly this fraction of the lowest scores, ranked across all tensors
      (``scope="global"``), within each tensor (``"local"``) or within each output row of each
      tensor (``"row"``: Wanda's comparison group, which keeps every output neuron fed).
    - ``threshold``: prune every weight whose score is below τ (sparsity then follows from τ).
    - ``previous``: already-pruned weights stay pruned and count toward the target, so sparsity
      only grows across iterative/gradual steps.
    """
    if (sparsity is None) == (threshold is None):
        raise PrunekitError("give exactly one of a sparsity ratio or a threshold τ")
    if scope not in SCOPES:
        raise PrunekitError(f"unknown scope {scope!r}; choose {', '.join(SCOPES)}")
    ranked = {}
    for name, s in scores.items():
        s = s.detach().float()
        if previous is not None and name in previous:
            s = s.masked_fill(~previous[name].to(s.device), float("-inf"))
        ranked[name] = s
    if threshold is not None:
        return {n: s >= threshold for n, s in ranked.items()}
    check_sparsity(sparsity)
    if scope == "local":
        return {n: _keep_top(s, sparsity) for n, s in ranked.items()}
    if scope == "row":
        return {n: keep_per_row(s, sparsity) if s.dim() == 2 else _keep_top(s, sparsity) for n, s in ranked.items()}
    flat = torch.cat([s.flatten() for s in ranked.values()])
    keep_flat = _keep_top(flat, sparsity)
    out, start = {}, 0
    for n, s in ranked.items():
        out[n] = keep_flat[start : start + s.numel()].view_as(s)
        start += s.numel()
    return out


def _keep_top(scores: Tensor, sparsity: float) -> Tensor:
    """Keep-mask removing exactly round(sparsity · n) lowest scores (ties broken by position)."""
    n_prune = int(round(sparsity * scores.numel()))
    keep = torch.ones_like(scores, dtype=torch.bool)
    if n_prune:
        idx = torch.topk(scores.flatten(), n_prune, largest=False, sorted=False).indices
        keep.view(-1)[idx] = False
    return keep


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """``"2:4"`` → (2, 4): keep at most N of every M consecutive weights along the input dimension."""
    if pattern is None or pattern in ("", "none", "unstructured"):
        return None
    try:
        n, m = (int(x) for x in pattern.split(":"))
    except ValueError:
        raise PrunekitError(f"--pattern must look like N:M (e.g. 2:4), got {pattern!r}") from None
    if not 0 < n < m:
        raise PrunekitError(f"--pattern {pattern}: need 0 < N < M")
    return n, m


def keep_per_row(scores: Tensor, sparsity: float) -> Tensor:
    """Keep-mask pruning the same number of lowest scores in every output row (Wanda's comparison group)."""
    check_sparsity(sparsity)
    n_prune = int(round(sparsity * scores.shape[1]))
    keep = torch.ones_like(scores, dtype=torch.bool)
    if n_prune:
        idx = torch.topk(scores.float(), n_prune, dim=1, largest=False, sorted=False).indices
        keep.scatter_(1, idx, False)
    return keep


def keep_n_of_m(scores: Tensor, n: int, m: int) -> Tensor:
    """N:M keep-mask: in each row, the N highest scores of every M consecutive input columns."""
    rows, cols = scores.shape
    if cols % m:
        raise PrunekitError(f"N:M pattern {n}:{m} needs the input width to be a multiple of {m}, got {cols}")
    groups = scores.float().reshape(rows, cols // m, m)
    idx = torch.topk(groups, m - n, dim=2, largest=False, sorted=False).indices
    keep = torch.ones_like(groups, dtype=torch.bool).scatter_(2, idx, False)
    return keep.reshape(rows, cols)


class MaskSet:
    """Masks for a set of named weights, applied in place and kept through optimizer steps."""

    def __init__(self, params: Mapping[str, nn.Parameter]) -> None:
        self.params = dict(params)
        self.masks: dict[str, Tensor] = {}

    def update(self, masks: Mapping[str, Tensor], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Install new masks, zero the pruned weights and their optimizer state."""
        for name, mask in masks.items():
            self.masks[name] = mask.to(self.params[name].device)
        self.apply()
        if optimizer is not None:
            self.zero_optimizer_state(optimizer)

    @torch.no_grad()
    def apply(self) -> None:
        # masked_fill, not mul: w * 0 gives -0.0 for negative w, which is a different bit pattern
        # and would defeat packed storage (and bit-exact mask checks).
        for name, mask in self.masks.items():
            self.params[name].masked_fill_(~mask, 0.0)

    @torch.no_grad()
    def zero_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        for name, mask in self.masks.items():
            state = optimizer.state.get(self.params[name], {})
            for value in state.values():
                if isinstance(value, Tensor) and value.shape == mask.shape:
                    value.mul_(mask)

    def sparsity(self) -> float:
        """Fraction of zero weights over all managed tensors (counts zeros, not masks)."""
        zeros = sum(int((p == 0).sum()) for p in self.params.values())
        return zeros / max(1, sum(p.numel() for p in self.params.values()))

    def per_layer(self) -> dict[str, float]:
        return {n: float((p == 0).float().mean()) for n, p in self.params.items()}

    def state_dict(self) -> dict[str, Tensor]:
        return {n: m.clone() for n, m in self.masks.items()}

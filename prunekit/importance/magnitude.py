"""Magnitude |w|: the classic baseline (Han et al. 2015; Zhu & Gupta 2017), and its group norms L1 and L2."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prunekit.importance.base import Importance
from prunekit.importance.registry import GROUPS, ONESHOT, WEIGHTS


class Magnitude(Importance):
    name = "magnitude"
    help = "|w|: small weights go first"
    applies = frozenset({WEIGHTS, ONESHOT})

    def scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        return {n: p.detach().abs().float() for n, p in params.items()}


class L1(Magnitude):
    """A group's Σ|w| over its slices: magnitude summed (biases are left out, as for single weights)."""

    name = "l1"
    help = "Σ|w| over a group's weights"
    applies = frozenset({GROUPS})


class L2(Importance):
    """A group's sqrt(Σw²) over its slices."""

    name = "l2"
    help = "sqrt(Σw²) over a group's weights"
    applies = frozenset({GROUPS})

    def scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        return {n: p.detach().float().pow(2) for n, p in params.items()}

    def reduce(self, total: Tensor) -> Tensor:
        return torch.sqrt(total)

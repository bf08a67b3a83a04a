"""Random scores: the control every criterion must beat."""

from __future__ import annotations

import zlib

import torch
from torch import Tensor, nn

from prunekit.importance.base import Importance


class RandomImportance(Importance):
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.calls = 0

    def scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        # One generator per tensor, seeded from (seed, name, call): identical on every process and
        # run, independent of iteration order, and a fresh draw at each iterative step.
        out = {}
        for name, p in params.items():
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()) + self.calls)
            out[name] = torch.rand(p.shape, generator=gen).to(p.device)
        self.calls += 1
        return out

"""Random scores: the control every criterion must beat."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from prunekit.arch.groups import TextGroup, hidden_groups
from prunekit.arch.sites import attn_site, ffn_site, num_layers
from prunekit.importance.base import Batch, GroupScores, Importance
from prunekit.importance.registry import GROUPS, WEIGHTS


class RandomImportance(Importance):
    name = "random"
    help = "seeded random scores: the control"
    applies = frozenset({WEIGHTS, GROUPS})

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.calls = 0

    @classmethod
    def build(cls, seed: int = 0) -> RandomImportance:
        return cls(seed)

    def _generator(self, tag: str, offset: int = 0) -> torch.Generator:
        # One generator per tensor or group kind, seeded from (seed, tag[, call]): identical on every
        # process and run, independent of iteration order
        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(tag.encode()) + offset)

    def scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        # a fresh draw at each iterative step
        out = {name: torch.rand(p.shape, generator=self._generator(name, self.calls)).to(p.device)
               for name, p in params.items()}
        self.calls += 1
        return out

    def draw(self, tag: str, size: int) -> Tensor:
        """``size`` uniform scores for the groups called ``tag``: the same on every run and process."""
        return torch.rand(size, generator=self._generator(tag))

    def score_groups(self, model: nn.Module, batches: Sequence[Batch] | None, hidden: bool) -> GroupScores:
        """Every group kind drawn, layers included (a random ranking needs no layer criterion)."""
        out = GroupScores()
        n = num_layers(model)
        for i in range(n):
            s = attn_site(model, i)
            out.heads[i], out.kv[i] = self.draw(f"heads.{i}", s.n_q), self.draw(f"kv.{i}", s.n_kv)
            out.ffn[i] = self.draw(f"ffn.{i}", ffn_site(model, i).width)
        out.hidden = self.draw("hidden", hidden_groups(model).count)
        out.layers = self.draw("layers", n)
        return out

    def score_units(self, model: nn.Module, groups: list[TextGroup],
                    batches: Sequence[Batch] | None) -> dict[str, Tensor]:
        return {g.name: self.draw(g.name, g.count) for g in groups}

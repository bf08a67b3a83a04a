"""Magnitude |w|: the classic baseline (Han et al. 2015; Zhu & Gupta 2017)."""

from __future__ import annotations

from torch import Tensor, nn

from prunekit.importance.base import Importance


class Magnitude(Importance):
    name = "magnitude"

    def scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        return {n: p.detach().abs().float() for n, p in params.items()}

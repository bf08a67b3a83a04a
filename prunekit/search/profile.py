"""A low-dimensional search space for LM sparsity: a depth profile and an attention/MLP split.

Thirty free per-block ratios fitted on a few thousand held-out tokens chase the noise of the
measurement (bench/results/search.md: such a plan lost to uniform on the evaluation text). A profile
has two numbers that generalise: ``slope`` — block i's sparsity is c + slope·(i/(n−1) − ½), deeper
blocks pruned more when positive — and ``split`` — inside every block the attention Linears are pruned
``split`` more than the MLP ones, weighted by their parameter counts so the block's total stays put.
The constant c is solved so the plan meets the budget exactly; the grid is small enough to screen
every point with the proxy and measure the promising ones for real.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from prunekit.arch import transformer_layers
from prunekit.errors import PrunekitError
from prunekit.prune.calibration import sublayer_groups
from prunekit.report.metrics import metric_of, score_of
from prunekit.search.annealing import Candidate, SearchResult, SearchSettings
from prunekit.search.budget import Budget, CostModel, Unit

DEFAULT_SLOPES = (-0.2, -0.1, 0.0, 0.1, 0.2)
DEFAULT_SPLITS = (-0.2, -0.1, 0.0, 0.1, 0.2)
MAX_RATIO = 0.95


@dataclass
class Profile:
    """A plan in the profile space: per-block attention and MLP sparsities."""

    slope: float
    split: float
    attention: list[float]
    mlp: list[float]
    blocks: list[float]  # the param-weighted sparsity of each block (what the cost model counts)

    @property
    def label(self) -> str:
        if not self.slope and not self.split:
            return "uniform"
        return f"profile slope {self.slope:+.2f}, attention − MLP {self.split:+.2f}"


def attention_shares(model: nn.Module) -> list[float]:
    """Per block: the attention Linears' share (q, k, v, o) of the block's pruned Linear weights."""
    _, layers = transformer_layers(model)
    shares = []
    for block in layers:
        groups = sublayer_groups(model, block)
        sizes = [[block.get_submodule(n).weight.numel() for n in g] for g in groups]
        shares.append(sum(map(sum, sizes[:2])) / max(1, sum(map(sum, sizes))))
    return shares


def make_profile(slope: float, split: float, shares: Sequence[float], cost: CostModel,
                 budget: Budget) -> Profile | None:
    """The profile meeting ``budget``, or None when some ratio would leave [0, MAX_RATIO]."""
    n = len(shares)
    depth = [i / (n - 1) - 0.5 if n > 1 else 0.0 for i in range(n)]

    def blocks(c: float) -> list[float]:
        return [c + slope * d for d in depth]

    lo, hi = -1.0, 1.0
    for _ in range(60):  # the cost model is monotone in c; clipping is checked below, not hidden
        mid = (lo + hi) / 2
        if cost.kept([min(max(r, 0.0), 1.0) for r in blocks(mid)]) > budget.keep:
            lo = mid
        else:
            hi = mid
    b = [round(r, 4) for r in blocks(hi)]
    attention = [round(r + split * (1 - a), 4) for r, a in zip(b, shares, strict=True)]
    mlp = [round(r - split * a, 4) for r, a in zip(b, shares, strict=True)]
    if any(not 0.0 <= r <= MAX_RATIO for r in [*b, *attention, *mlp]):
        return None
    return Profile(slope, split, attention, mlp, b)


def profile_grid(shares: Sequence[float], cost: CostModel, budget: Budget, slopes: Sequence[float] = DEFAULT_SLOPES,
                 splits: Sequence[float] = DEFAULT_SPLITS) -> list[Profile]:
    """Every feasible (slope, split) of the grid; uniform (0, 0) first."""
    grid = [(0.0, 0.0)] + [(s, p) for s in slopes for p in splits if (s, p) != (0.0, 0.0)]
    out = [p for s, q in grid if (p := make_profile(s, q, shares, cost, budget)) is not None]
    if not out or out[0].label != "uniform":
        raise PrunekitError(f"budget {budget} cannot be met by a uniform per-block sparsity below {MAX_RATIO}")
    return out


def profile_search(
    units: Sequence[Unit], cost: CostModel, budget: Budget, shares: Sequence[float],
    proxy: Callable[[Profile], float], evaluate: Callable[[Profile], float], settings: SearchSettings,
    baseline: float, slopes: Sequence[float] = DEFAULT_SLOPES, splits: Sequence[float] = DEFAULT_SPLITS,
    progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Screen every profile of the grid with ``proxy`` (perplexity), then measure uniform and the
    ``settings.evals − 1`` best-predicted profiles with ``evaluate``; the best measured one wins."""
    start = time.perf_counter()
    grid = profile_grid(shares, cost, budget, slopes, splits)
    cands: list[Candidate] = []
    trace: list[dict[str, Any]] = []
    best = -math.inf
    for k, p in enumerate(grid, start=1):
        score = score_of("perplexity", proxy(p))
        cands.append(Candidate(list(p.blocks), score, cost.kept(p.blocks), label=p.label,
                               parts={"attention": p.attention, "mlp": p.mlp} if p.split else None))
        trace.append({"step": k, "proposed": score, "current": max(best, score), "accepted": score > best,
                      "temperature": 0.0, "slope": p.slope, "split": p.split})
        best = max(best, score)
    if progress:
        progress(f"profiles: {len(grid)} screened by the proxy, best predicted perplexity "
                 f"{metric_of('perplexity', best):.4g} (uniform {metric_of('perplexity', cands[0].proxy):.4g})")
    chosen = [cands[0]] + sorted(cands[1:], key=lambda c: -c.proxy)[: settings.evals - 1]
    by_label = {p.label: p for p in grid}
    for k, c in enumerate(chosen, start=1):
        c.real = evaluate(by_label[c.label])
        if progress:
            progress(f"real evaluation {k}/{len(chosen)} ({c.label}): perplexity {c.real:.4g} "
                     f"(predicted {metric_of('perplexity', c.proxy):.4g})")
    best_c = min(chosen, key=lambda c: (c.real, -c.proxy))
    return SearchResult(list(units), best_c, chosen[0], chosen, trace, 0.0, time.perf_counter() - start,
                        len(chosen), "perplexity", baseline, budget,
                        extra={"method": "profile grid", "best_proxy": best, "distinct_plans": len(grid),
                               "slopes": list(slopes), "splits": list(splits)})

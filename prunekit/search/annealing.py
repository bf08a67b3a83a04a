"""Simulated annealing over per-unit ratios under a budget, screened by the sensitivity proxy.

- **Proxy.** A plan's score is predicted as the baseline plus the sum of its units' measured
  sensitivity deltas, interpolated between the measured ratios (:class:`SensitivityTable`): cheap
  enough for thousands of steps.
- **Moves keep the budget.** A move changes one unit's ratio and then solves for another unit's ratio
  (bisection on the cost model) so that the total removed cost stays exactly at the budget: ratio
  mass flows between layers weighted by what each costs in parameters, MACs or measured latency.
- **Temperature in the metric's units.** T0 is set from the proxy deltas of random moves at the start,
  so that a typical worsening move is accepted with probability 1/2; it then cools geometrically to
  T0/100 over the fixed number of steps. Seeded: the same seed gives the same trace.
- **Real evaluations.** The best distinct plans the walk visited (after rounding to whole heads /
  neurons and repairing the budget) are measured for real on validation data, within a fixed budget
  of ``evals`` evaluations; the uniform plan is one of them, so the result is never worse than
  uniform on validation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunekit.errors import PrunekitError
from prunekit.report.metrics import metric_of, score_of
from prunekit.search.budget import Budget, CostModel, Unit
from prunekit.search.sensitivity import SensitivityTable


@dataclass
class SearchSettings:
    """``steps`` proxy steps of annealing; ``evals`` real evaluations of the best candidates."""

    steps: int = 4000
    evals: int = 8
    move: float = 0.2  # largest ratio change of one move
    t_end: float = 0.01  # final temperature as a fraction of T0
    calibration_moves: int = 200
    round_to: int = 1  # FFN widths (and the neurons the ratio counts) in multiples of N
    seed: int = 0

    def check(self) -> None:
        if self.steps < 1:
            raise PrunekitError(f"search steps must be ≥ 1, got {self.steps}")
        if self.evals < 1:
            raise PrunekitError(f"--evals must be ≥ 1 (real evaluations of the best candidates), got {self.evals}")
        if not 0 < self.move <= 1:
            raise PrunekitError(f"move size must be in (0, 1], got {self.move}")


@dataclass
class Candidate:
    ratios: list[float]
    proxy: float  # predicted score (score_of units)
    kept: float  # fraction of the budget's cost kept
    real: float | None = None  # measured metric
    label: str = "searched"
    # LM profiles: per-block "attention" and "mlp" sparsities when they differ (ratios: the blocks' totals)
    parts: dict[str, list[float]] | None = None
    halves: list[float] | None = None  # LM: the real metric on each half of the validation windows
    # classifier finalists ranked on a held-out loss (prunekit.search.finalists): its mean, and the paired
    # gain over uniform with its standard error
    loss: float | None = None
    paired: dict[str, float] | None = None


@dataclass
class SearchResult:
    units: list[Unit]
    best: Candidate
    uniform: Candidate
    candidates: list[Candidate]
    trace: list[dict[str, Any]]
    t0: float
    seconds: float
    evaluations: int
    metric: str
    baseline: float
    budget: Budget
    extra: dict[str, Any] = field(default_factory=dict)

    def ratios(self) -> dict[str, float]:
        return {u.name: r for u, r in zip(self.units, self.best.ratios, strict=True)}


class Proxy:
    """Predicted score of per-unit ratios: baseline + Σ interpolated sensitivity deltas."""

    def __init__(self, units: Sequence[Unit], tables: Sequence[SensitivityTable]) -> None:
        self.units = list(units)
        by_unit: dict[str, SensitivityTable] = {}
        for t in tables:
            for name in t.values:
                by_unit[name] = t
        missing = [u.name for u in self.units if u.name not in by_unit]
        if missing:
            raise PrunekitError(f"the sensitivity tables have no measurements for {', '.join(missing)}")
        self.tables = [by_unit[u.name] for u in self.units]
        self.metric = self.tables[0].metric
        self.baseline = self.tables[0].baseline
        self.base_score = score_of(self.metric, self.baseline)
        # the largest ratio each unit was measured at: the proxy does not extrapolate past it
        self.caps = [min(u.max_ratio, max(float(r) for r in t.values[u.name])) for u, t in zip(self.units, self.tables,
                                                                                              strict=True)]

    def __call__(self, ratios: Sequence[float]) -> float:
        return self.base_score + sum(t.delta(u.name, r) for u, t, r in zip(self.units, self.tables, ratios,
                                                                           strict=True))


def quantize(units: Sequence[Unit], ratios: Sequence[float], round_to: int = 1) -> list[float]:
    """Ratios a real plan can have: whole heads / kv groups, FFN widths in multiples of ``round_to``."""
    out = []
    for u, r in zip(units, ratios, strict=True):
        if u.kind == "heads" or u.kind == "layer":
            out.append(round(r * u.count) / u.count)
        elif u.kind == "ffn":
            keep = u.count - round(r * u.count)
            if round_to > 1:
                keep = max(round_to, int(round(keep / round_to)) * round_to)
            out.append(min(1.0 - keep / u.count, u.max_ratio))
        else:
            out.append(round(r, 3))
    return out


def _step(u: Unit, round_to: int) -> float:
    if u.kind == "ffn":
        return max(round_to, 1) / u.count
    if u.kind == "block":
        return 0.005
    return 1.0 / u.count


def repair(units: Sequence[Unit], ratios: list[float], cost: CostModel, budget: Budget, proxy: Proxy,
           caps: Sequence[float], round_to: int = 1) -> list[float]:
    """After rounding: while over budget, remove one more step where the proxy loses least per cost."""
    r = list(ratios)
    for _ in range(10_000):
        if cost.kept(r) <= budget.keep + 1e-9:
            return r
        best, best_i = None, -1
        now = proxy(r)
        for i, u in enumerate(units):
            nr = min(r[i] + _step(u, round_to), caps[i])
            if nr <= r[i] + 1e-12:
                continue
            gain = cost.removed(i, nr) - cost.removed(i, r[i])
            if gain <= 0:
                continue
            trial = list(r)
            trial[i] = nr
            loss = (now - proxy(trial)) / gain
            if best is None or loss < best:
                best, best_i = loss, i
        if best_i < 0:
            break
        r[best_i] = min(r[best_i] + _step(units[best_i], round_to), caps[best_i])
    if cost.kept(r) > budget.keep + 1e-9:
        raise PrunekitError(f"budget {budget} cannot be met by whole heads / neurons within the measured ratios")
    return r


def uniform_start(cost: CostModel, budget: Budget, caps: Sequence[float]) -> list[float]:
    """The same ratio everywhere (capped per unit) that removes exactly the budget."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if cost.kept([min(mid, c) for c in caps]) > budget.keep:
            lo = mid
        else:
            hi = mid
    return [min(hi, c) for c in caps]


def _solve(cost: CostModel, r: list[float], b: int, target_removed: float, cap: float) -> float | None:
    """The ratio of unit ``b`` that makes the total removed cost equal ``target_removed`` (None: impossible)."""
    others = sum(cost.removed(i, x) for i, x in enumerate(r) if i != b)
    need = target_removed - others
    if cost.removed(b, cap) < need - 1e-9:
        return None
    if need <= 0:
        return 0.0
    lo, hi = 0.0, cap
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost.removed(b, mid) < need:
            lo = mid
        else:
            hi = mid
    return hi


def anneal(
    units: Sequence[Unit], cost: CostModel, budget: Budget, proxy: Proxy, evaluate: Callable[[Sequence[float]], float],
    settings: SearchSettings | None = None, progress: Callable[[str], None] | None = None,
    choose: Callable[[list[Candidate]], int] | None = None,
    anchors: Mapping[str, Sequence[float]] | None = None,
) -> SearchResult:
    """Search per-unit ratios meeting ``budget`` that maximise the proxy, then evaluate the best for real.

    ``evaluate(ratios)`` returns the real validation metric of a (rounded) plan. ``choose(finalists)``
    (uniform first, all measured) returns the index of the one to keep; by default the best real metric.
    ``anchors`` (label → ratios, e.g. global ranking) are measured beside uniform within the same
    ``evals``, so the search never returns a plan that measured worse than an allocation the user could
    have picked without searching.
    """
    s = settings or SearchSettings()
    s.check()
    start = time.perf_counter()
    units = list(units)
    caps = proxy.caps
    cost.check_feasible(budget, caps)
    rng = np.random.default_rng(s.seed)
    target_removed = (1.0 - budget.keep) * cost.total
    current = uniform_start(cost, budget, caps)
    uniform_q = repair(units, quantize(units, current, s.round_to), cost, budget, proxy, caps, s.round_to)
    cur_score = proxy(current)

    def propose(r: list[float]) -> list[float] | None:
        for _ in range(20):
            a, b = rng.choice(len(units), size=2, replace=False)
            new = list(r)
            new[a] = float(np.clip(r[a] + rng.uniform(-s.move, s.move), 0.0, caps[a]))
            if abs(new[a] - r[a]) < 1e-6:
                continue
            rb = _solve(cost, new, int(b), target_removed, caps[b])
            if rb is None:
                continue
            new[b] = rb
            return new
        return None

    # temperature: a typical worsening move is accepted with p = 1/2 at the start
    worse = []
    for _ in range(s.calibration_moves):
        cand = propose(current)
        if cand is not None:
            d = proxy(cand) - cur_score
            if d < 0:
                worse.append(-d)
    t0 = float(np.median(worse) / math.log(2)) if worse else 1e-3
    t0 = max(t0, 1e-6)
    pool: dict[tuple, Candidate] = {}

    def remember(r: list[float]) -> None:
        q = repair(units, quantize(units, r, s.round_to), cost, budget, proxy, caps, s.round_to)
        key = tuple(round(x, 4) for x in q)
        if key not in pool:
            pool[key] = Candidate(q, proxy(q), cost.kept(q))

    remember(current)
    trace: list[dict[str, Any]] = []
    best_score = cur_score
    for step in range(1, s.steps + 1):
        temp = t0 * (s.t_end ** (step / s.steps))
        cand = propose(current)
        if cand is None:
            continue
        score = proxy(cand)
        accept = score >= cur_score or rng.random() < math.exp((score - cur_score) / temp)
        if accept:
            current, cur_score = cand, score
            if score > best_score - 1e-12:
                best_score = max(best_score, score)
            remember(current)
        trace.append({"step": step, "proposed": score, "current": cur_score, "accepted": bool(accept),
                      "temperature": temp})
    if progress:
        progress(f"annealing: {s.steps} proxy steps, T0 {t0:.4g}, {len(pool)} distinct plans visited, "
                 f"best predicted {best_score:.4g} (uniform {proxy(uniform_q):.4g})")
    # real evaluations: the uniform plan, then the best distinct plans by proxy
    uniform = Candidate(uniform_q, proxy(uniform_q), cost.kept(uniform_q), label="uniform")
    fixed, seen = [uniform], {tuple(round(x, 4) for x in uniform_q)}
    for label, r in (anchors or {}).items():
        q = repair(units, quantize(units, list(r), s.round_to), cost, budget, proxy, caps, s.round_to)
        if tuple(round(x, 4) for x in q) not in seen and len(fixed) < s.evals:
            seen.add(tuple(round(x, 4) for x in q))
            fixed.append(Candidate(q, proxy(q), cost.kept(q), label=label))
    ranked = sorted((c for k, c in pool.items() if k not in seen), key=lambda c: -c.proxy)
    chosen = fixed + _diverse(ranked, s.evals - len(fixed))
    sign = 1 if proxy.tables[0].higher_is_better else -1
    for k, c in enumerate(chosen, start=1):
        c.real = evaluate(c.ratios)
        if progress:
            progress(f"real evaluation {k}/{len(chosen)} ({c.label}): {proxy.metric} {c.real:.4g} "
                     f"(predicted {metric_of(proxy.metric, c.proxy):.4g})")
    # by default the best real metric (exact ties: the better prediction, else uniform)
    best = max(chosen, key=lambda c: (sign * c.real, c.proxy)) if choose is None else chosen[choose(chosen)]
    return SearchResult(units, best, uniform, chosen, trace, t0, time.perf_counter() - start, len(chosen),
                        proxy.metric, proxy.baseline, budget,
                        extra={"best_proxy": max(c.proxy for c in pool.values()), "distinct_plans": len(pool)})


def _diverse(ranked: list[Candidate], n: int) -> list[Candidate]:
    """The n best by proxy, skipping near-duplicates (max ratio difference < 0.02) while there is choice."""
    out: list[Candidate] = []
    for c in ranked:
        if len(out) >= n:
            break
        if all(max(abs(a - b) for a, b in zip(c.ratios, o.ratios, strict=True)) >= 0.02 for o in out):
            out.append(c)
    for c in ranked:  # not enough distinct ones: fill with the rest
        if len(out) >= n:
            break
        if c not in out:
            out.append(c)
    return out


def min_size_search(
    units: Sequence[Unit], cost: CostModel, proxy: Proxy, evaluate: Callable[[Sequence[float]], float],
    max_drop: float, kind: str, settings: SearchSettings | None = None, progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """``--max-drop P``: the smallest budget whose best plan stays within P of the baseline.

    Bisection on the budget with proxy-only annealing (no real evaluation), then the real evaluations
    at the budget found; if none of them holds the drop, the budget grows by 0.05 (at most 3 times).
    P is in the metric's units: accuracy points, or perplexity increase in % for language models."""
    s = settings or SearchSettings()
    caps = proxy.caps
    lowest = cost.kept(caps)

    def within(value: float) -> bool:
        if proxy.metric == "perplexity":
            return value <= proxy.baseline * (1 + max_drop / 100)
        return proxy.baseline - value <= max_drop

    lo, hi = lowest + 1e-3, 0.999
    quick = SearchSettings(**{**s.__dict__, "steps": max(200, s.steps // 4), "evals": 1})
    for _ in range(7):
        mid = (lo + hi) / 2
        res = anneal(units, cost, Budget(kind, mid), proxy, lambda r: proxy.baseline, quick)
        if within(metric_of(proxy.metric, res.extra["best_proxy"])):
            hi = mid
        else:
            lo = mid
    keep = hi
    for _ in range(4):
        if progress:
            progress(f"--max-drop {max_drop}: trying budget {kind}={keep:.3f}")
        res = anneal(units, cost, Budget(kind, keep), proxy, evaluate, s, progress)
        ok = [c for c in res.candidates if within(c.real)]
        if ok:
            res.best = min(ok, key=lambda c: c.kept)
            res.extra["max_drop"] = max_drop
            return res
        keep = min(0.999, keep + 0.05)
    res.extra["max_drop"] = max_drop
    res.extra["note"] = f"no plan found within --max-drop {max_drop}; the best at budget {kind}={keep:.3f} is returned"
    return res


def as_mapping(units: Sequence[Unit], ratios: Sequence[float]) -> Mapping[str, float]:
    return {u.name: float(r) for u, r in zip(units, ratios, strict=True)}

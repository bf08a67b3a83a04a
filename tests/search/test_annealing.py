"""Simulated annealing on the sensitivity proxy: budget-keeping moves, calibrated temperature, seeded."""

from __future__ import annotations

import pytest

from prunekit.errors import PrunekitError
from prunekit.search.annealing import Proxy, SearchSettings, anneal, min_size_search, quantize
from prunekit.search.budget import Budget, CostModel, Unit
from prunekit.search.sensitivity import SensitivityTable

RATIOS = [0.1, 0.3, 0.5, 0.7, 0.9]


def _setup(slopes=(1.0, 20.0, 2.0, 30.0)):
    """Four units of equal cost; accuracy falls linearly with each unit's ratio at its own slope."""
    units = [Unit(f"u{i}", "ffn", i, 100, 1000, 1000, 0.99) for i in range(len(slopes))]
    values = {u.name: {f"{r:g}": 90.0 - s * r for r in RATIOS} for u, s in zip(units, slopes, strict=True)}
    table = SensitivityTable("ffn", "accuracy", True, 90.0, RATIOS, [u.name for u in units], values)
    return units, Proxy(units, [table])


def _true(slopes):
    return lambda r: 90.0 - sum(s * x for s, x in zip(slopes, r, strict=True))


def test_search_moves_ratio_to_insensitive_units_and_keeps_budget():
    slopes = (1.0, 20.0, 2.0, 30.0)
    units, proxy = _setup(slopes)
    cost = CostModel(units, "params")
    res = anneal(units, cost, Budget("params", 0.5), proxy, _true(slopes), SearchSettings(steps=2000, evals=4))
    r = res.best.ratios
    assert r[0] > 0.8 and r[2] > 0.8 and r[1] < 0.3 and r[3] < 0.3
    assert cost.kept(r) <= 0.5 + 1e-9
    assert res.best.real > res.uniform.real + 10
    assert res.uniform.label == "uniform" and res.evaluations == 4
    assert res.t0 > 0 and any(not t["accepted"] for t in res.trace) and any(t["accepted"] for t in res.trace)


def test_every_accepted_state_keeps_the_budget_exactly():
    units, proxy = _setup()
    cost = CostModel(units, "params")
    seen = []
    res = anneal(units, cost, Budget("params", 0.6), proxy, lambda r: seen.append(cost.kept(r)) or 0.0,
                 SearchSettings(steps=300, evals=3))
    assert all(k <= 0.6 + 1e-9 for k in seen)
    assert len(res.trace) > 250


def test_same_seed_same_trace_and_temperature_follows_the_metric_scale():
    units, proxy = _setup()
    cost = CostModel(units, "params")
    a = anneal(units, cost, Budget("params", 0.5), proxy, lambda r: 0.0, SearchSettings(steps=200, evals=2, seed=3))
    b = anneal(units, cost, Budget("params", 0.5), proxy, lambda r: 0.0, SearchSettings(steps=200, evals=2, seed=3))
    assert a.trace == b.trace and a.best.ratios == b.best.ratios
    units10, proxy10 = _setup(tuple(10 * s for s in (1.0, 20.0, 2.0, 30.0)))
    c = anneal(units10, CostModel(units10, "params"), Budget("params", 0.5), proxy10, lambda r: 0.0,
               SearchSettings(steps=200, evals=2, seed=3))
    assert c.t0 == pytest.approx(10 * a.t0, rel=1e-6)  # T0 in the metric's own units


def test_infeasible_budget_is_a_clear_error():
    units, proxy = _setup()
    with pytest.raises(PrunekitError, match="cannot be met"):
        anneal(units, CostModel(units, "params"), Budget("params", 0.05), proxy, lambda r: 0.0)


def test_max_drop_finds_the_smallest_budget_within_the_drop():
    slopes = (1.0, 20.0, 2.0, 30.0)
    units, proxy = _setup(slopes)
    cost = CostModel(units, "params")
    res = min_size_search(units, cost, proxy, _true(slopes), 3.0, "params", SearchSettings(steps=400, evals=3))
    assert 90.0 - res.best.real <= 3.0
    assert res.best.kept < 0.6  # the two cheap units can go almost entirely


def test_quantize_gives_whole_heads_and_rounded_widths():
    units = [Unit("h", "heads", 0, 12, 10, 10, 11 / 12), Unit("f", "ffn", 0, 100, 10, 10, 0.99)]
    assert quantize(units, [0.3, 0.333], round_to=8) == [pytest.approx(4 / 12), pytest.approx(1 - 64 / 100)]


@pytest.mark.parametrize(("text", "match"), [("params", "must look like"), ("flops=0.5", "must look like"),
                                              ("params=1.5", r"\(0, 1\)"), ("macs=x", "not a number")])
def test_bad_budget(text, match):
    with pytest.raises(PrunekitError, match=match):
        Budget.parse(text)


def test_latency_budget_refuses_unstructured():
    units = [Unit("block.0", "block", 0, 10, 10, 10, 0.99)]
    with pytest.raises(PrunekitError, match="latency budget needs structured"):
        CostModel(units, "latency", {})


def test_choose_decides_among_the_measured_finalists():
    """A custom ranking (the KL rule of prunekit.search.finalists) overrides the best real metric:
    here it keeps uniform although a searched plan measured far better."""
    slopes = (1.0, 20.0, 2.0, 30.0)
    units, proxy = _setup(slopes)
    seen = []

    def keep_uniform(finalists):
        seen.extend(c.label for c in finalists)
        return 0

    res = anneal(units, CostModel(units, "params"), Budget("params", 0.5), proxy, _true(slopes),
                 SearchSettings(steps=500, evals=3), choose=keep_uniform)
    assert seen[0] == "uniform" and len(seen) == 3 and all(c.real is not None for c in res.candidates)
    assert res.best is res.uniform and max(c.real for c in res.candidates) > res.uniform.real + 10


def test_anchors_are_measured_within_the_evaluation_budget_and_can_win():
    """A standard allocation passed as an anchor (global ranking) is measured beside uniform, counts
    against ``evals``, is repaired to the budget, and is returned when it measures best."""
    slopes = (1.0, 20.0, 2.0, 30.0)
    units, proxy = _setup(slopes)
    cost = CostModel(units, "params")
    anchor = [0.99, 0.0, 0.99, 0.0]  # keeps 50.5 %: over the budget, so repair must remove one more step
    truth = _true(slopes)  # cutting the flat units 0 and 2 to the cap is the best plan there is
    res = anneal(units, cost, Budget("params", 0.5), proxy, truth, SearchSettings(steps=300, evals=3),
                 anchors={"global": anchor})
    labels = [c.label for c in res.candidates]
    assert labels[:2] == ["uniform", "global"] and len(labels) == 3 and res.evaluations == 3
    measured = res.candidates[1]
    assert measured.ratios != anchor and cost.kept(measured.ratios) <= 0.5 + 1e-9  # repaired to the budget
    assert res.best is measured and measured.real > max(c.real for c in res.candidates if c is not measured)
    same = anneal(units, cost, Budget("params", 0.5), proxy, truth, SearchSettings(steps=300, evals=3),
                  anchors={"global": res.uniform.ratios})  # an anchor equal to uniform is not measured twice
    assert [c.label for c in same.candidates].count("uniform") == 1 and "global" not in [
        c.label for c in same.candidates]

"""LM search: the profile space (depth slope × attention/MLP split), the real sequential evaluation that
restores the weights, the two-halves noise guard, and profile plans applied by prune --task lm."""

from __future__ import annotations

import math

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.search.annealing import Candidate, SearchResult, SearchSettings
from prunekit.search.budget import Budget, CostModel, Unit, block_units
from prunekit.search.profile import attention_shares, make_profile, profile_grid, profile_search


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def _blocks(n: int = 6) -> tuple[list[Unit], CostModel]:
    units = [Unit(f"block.{i}", "block", i, 1000, 1000, 1000, 0.99) for i in range(n)]
    return units, CostModel(units, "params")


@pytest.mark.parametrize(("slope", "split"), [(0.0, 0.0), (0.2, 0.0), (-0.1, 0.2), (0.1, -0.2)])
def test_profiles_meet_the_budget_and_split_within_each_block(slope, split):
    units, cost = _blocks()
    shares = [0.25] * len(units)
    p = make_profile(slope, split, shares, cost, Budget("params", 0.5))
    assert cost.kept(p.blocks) == pytest.approx(0.5, abs=1e-3)
    for b, a, m in zip(p.blocks, p.attention, p.mlp, strict=True):
        assert 0.25 * a + 0.75 * m == pytest.approx(b, abs=2e-4)  # param-weighted: the block's total is kept
        assert a - m == pytest.approx(split, abs=2e-4)
    if slope:  # deeper blocks pruned more for a positive slope, less for a negative one
        assert (p.blocks[-1] - p.blocks[0]) == pytest.approx(slope, abs=2e-4)


def test_infeasible_profiles_are_left_out_and_uniform_comes_first():
    units, cost = _blocks()
    assert make_profile(0.0, 1.5, [0.25] * 6, cost, Budget("params", 0.5)) is None  # attention past MAX_RATIO
    grid = profile_grid([0.25] * 6, cost, Budget("params", 0.5), slopes=(0.0, 0.2, 1.6), splits=(0.0, 0.1))
    assert grid[0].label == "uniform" and grid[0].blocks == [0.5] * 6
    assert {(p.slope, p.split) for p in grid} == {(0.0, 0.0), (0.0, 0.1), (0.2, 0.0), (0.2, 0.1)}
    with pytest.raises(PrunekitError, match="cannot be met"):
        profile_grid([0.25] * 6, cost, Budget("params", 0.01))


def test_profile_search_measures_uniform_and_the_best_predicted():
    units, cost = _blocks()
    truth = {(0.0, 0.0): 20.0, (0.1, 0.1): 18.0}

    def proxy(p):  # prefers (0.1, 0.1), then (0.1, 0.0)
        return 10.0 + abs(p.slope - 0.1) * 10 + abs(p.split - 0.1) * 5

    seen = []

    def real(p):
        seen.append((p.slope, p.split))
        return truth.get((p.slope, p.split), 25.0)

    res = profile_search(units, cost, Budget("params", 0.5), [0.25] * 6, proxy, real, SearchSettings(evals=3),
                         baseline=9.0, slopes=(0.0, 0.1), splits=(0.0, 0.1))
    assert seen == [(0.0, 0.0), (0.1, 0.1), (0.1, 0.0)]
    assert res.best.real == 18.0 and res.best.parts is not None and res.uniform.label == "uniform"
    assert res.evaluations == 3 and len(res.trace) == 4 and res.extra["method"] == "profile grid"


def test_attention_shares_of_a_llama_block(tiny_lm):
    from prunekit.io.hf import load_causal_lm

    lm, _ = load_causal_lm(str(tiny_lm))
    # q, o: 32×32; k, v: 16×32 (2 kv heads of 8); gate, up, down: 48×32
    assert attention_shares(lm) == pytest.approx([3072 / (3072 + 3 * 1536)] * 2)


def _probe(tiny_lm, tiny_text):
    from prunekit.io.hf import load_causal_lm
    from prunekit.search.sensitivity import LMProbe
    from prunekit.tasks.lm import calibration_windows, evaluation_windows, load_lm_text

    lm, tok = load_causal_lm(str(tiny_lm))
    text = load_lm_text(tok, str(tiny_text))
    calib = calibration_windows(text, 4, 16, 0)
    val = evaluation_windows(text, 16, 6)
    return lm.eval(), calib, val, LMProbe(lm, calib, val[:2], {"t": 1}, validation=val)


def test_real_evaluation_is_the_sequential_prune_and_restores_the_weights(tiny_lm, tiny_text):
    from prunekit.prune.oneshot import OneShotSettings, prune_oneshot
    from prunekit.tasks.lm import perplexity

    lm, calib, val, probe = _probe(tiny_lm, tiny_text)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    got = probe.measure_real([0.5, 0.7])
    assert all(torch.equal(v, before[k]) for k, v in lm.state_dict().items())
    assert len(probe.halves[(0.5, 0.7)]) == 2
    prune_oneshot(lm, calib, OneShotSettings(method="wanda", block_ratios=[0.5, 0.7], batch_size=4))
    assert got == pytest.approx(perplexity(lm, val)["perplexity"], rel=1e-5)
    a, b = probe.halves[(0.5, 0.7)]
    assert math.log(got) == pytest.approx((math.log(a) + math.log(b)) / 2, rel=1e-5)  # equal halves: mean NLL


def test_attention_and_mlp_get_their_own_sparsity(tiny_lm, tiny_text):
    from prunekit.prune.oneshot import OneShotSettings, prune_oneshot

    lm, calib, _, probe = _probe(tiny_lm, tiny_text)
    assert probe.measure_proxy([0.6, 0.6], [0.4, 0.4]) != probe.measure_proxy([0.6, 0.6])
    res = prune_oneshot(lm, calib, OneShotSettings(method="wanda", block_ratios=[0.6, 0.2], mlp_ratios=[0.4, 0.3]))
    sp = res.layer_sparsity
    assert sp["model.layers.0.self_attn.q_proj"] == pytest.approx(0.6, abs=0.02)
    assert sp["model.layers.1.self_attn.o_proj"] == pytest.approx(0.2, abs=0.02)
    assert sp["model.layers.0.mlp.down_proj"] == pytest.approx(0.4, abs=0.02)
    assert sp["model.layers.1.mlp.gate_proj"] == pytest.approx(0.3, abs=0.02)
    with pytest.raises(PrunekitError, match="same length"):
        OneShotSettings(method="wanda", block_ratios=[0.5, 0.5], mlp_ratios=[0.5]).check()


def _result(best_halves, uniform_halves) -> SearchResult:
    uni = Candidate([0.5], 0.0, 0.5, real=math.exp(sum(map(math.log, uniform_halves)) / 2), label="uniform")
    best = Candidate([0.6], 0.0, 0.5, real=math.exp(sum(map(math.log, best_halves)) / 2), label="profile")
    return SearchResult([], best, uni, [uni, best], [], 0.0, 0.0, 2, "perplexity", 10.0, Budget("params", 0.5))


class _Halves:
    def __init__(self, table):
        self.halves = table


@pytest.mark.parametrize(("best", "kept"), [([20.0, 21.0], "profile"), ([18.0, 22.5], "uniform")])
def test_a_gain_on_one_half_only_keeps_uniform(best, kept):
    from prunekit.search.api import _check_halves

    res = _result(best, [21.0, 22.0])
    assert res.best.real < res.uniform.real  # better on the whole validation set in both cases
    _check_halves(_Halves({(0.6,): best, (0.5,): [21.0, 22.0]}), res)
    assert res.best.label == kept and res.best.halves == (best if kept == "profile" else [21.0, 22.0])
    assert ("note" in res.extra) == (kept == "uniform")


def test_lm_profile_search_plan_is_applied_by_prune(tiny_lm, tiny_text, tmp_path):
    from prunekit.pipeline_lm import prune_lm
    from prunekit.prune.oneshot import OneShotSettings
    from prunekit.search.api import SearchData, search
    from prunekit.search.plan import check_plan, oneshot_ratios, read_plan

    opts = SearchData(task="lm", seq_len=16, lm_calib_samples=4, lm_eval_windows=2, lm_val_windows=4)
    summary = search(str(tiny_lm), str(tiny_text), tmp_path / "s", "params=0.5", evals=3, opts=opts)
    assert summary["search"]["method"] == "profile grid" and summary["sensitivity"] == []
    assert all(len(c["halves"]) == 2 for c in summary["search"]["candidates"])
    plan = read_plan(tmp_path / "s" / "plan.yaml")
    plan["sublayer_sparsity"] = {"attention": [0.7, 0.6], "mlp": [0.4, 0.45]}  # as a split profile writes it
    blocks, mlp = oneshot_ratios(plan)
    report = prune_lm(str(tiny_lm), str(tiny_text), tmp_path / "p",
                      OneShotSettings(method="wanda", block_ratios=blocks, mlp_ratios=mlp), calib_samples=4,
                      seq_len=16, eval_samples=2, plan=plan)
    assert report["block_sparsity_targets"] == [0.7, 0.6] and report["mlp_sparsity_targets"] == [0.4, 0.45]
    plan["sublayer_sparsity"] = {"attention": [0.7], "mlp": [0.4, 0.45]}
    from prunekit.io.hf import load_causal_lm

    with pytest.raises(PrunekitError, match="sublayer_sparsity attention must hold 2"):
        check_plan(plan, load_causal_lm(str(tiny_lm))[0])
    assert len(block_units(load_causal_lm(str(tiny_lm))[0])) == 2


@pytest.mark.parametrize(("kw", "match"), [({"lm_space": "free"}, "--space must be profile or blocks"),
                                           ({"lm_val_windows": 1}, "--val-windows must be at least 2")])
def test_lm_search_bad_input(tiny_lm, tiny_text, tmp_path, kw, match):
    from prunekit.search.api import SearchData, search

    opts = SearchData(task="lm", seq_len=16, lm_calib_samples=4, lm_eval_windows=2, **kw)
    with pytest.raises(PrunekitError, match=match):
        search(str(tiny_lm), str(tiny_text), tmp_path / "s", "params=0.5", evals=2, opts=opts)
    assert not (tmp_path / "s").exists()


def test_lm_search_and_split_plan_from_the_cli(tiny_lm, tiny_text, tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from prunekit.cli import app

    runner = CliRunner()
    common = ["--task", "lm", "-m", str(tiny_lm), "-d", str(tiny_text), "--seq-len", "16"]
    result = runner.invoke(app, ["search", *common, "--budget", "params=0.5", "--evals", "2", "--calib-samples", "4",
                                 "--eval-windows", "2", "--val-windows", "4", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    plan_file = tmp_path / "s" / "plan.yaml"
    plan = yaml.safe_load(plan_file.read_text())
    plan["sublayer_sparsity"] = {"attention": [0.6, 0.6], "mlp": [0.3, 0.3]}
    plan_file.write_text(yaml.safe_dump(plan))
    result = runner.invoke(app, ["prune", *common, "--method", "wanda", "--plan", str(plan_file),
                                 "--calib-samples", "4", "--eval-samples", "2", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["block_sparsity_targets"] == [0.6, 0.6] and report["mlp_sparsity_targets"] == [0.3, 0.3]


def test_blocks_space_anneals_and_measures_candidates_by_the_sequential_prune(tiny_lm, tiny_text, tmp_path):
    from prunekit.search.api import SearchData, search

    opts = SearchData(task="lm", seq_len=16, lm_calib_samples=4, lm_eval_windows=2, lm_val_windows=4,
                      lm_space="blocks")
    summary = search(str(tiny_lm), str(tiny_text), tmp_path / "s", "params=0.5", steps=100, evals=2,
                     ratios="0.3,0.5,0.7", opts=opts)
    cands = summary["search"]["candidates"]
    assert summary["plan"]["search"]["method"] == "simulated annealing" and summary["sensitivity"]
    assert [c["label"] for c in cands][0] == "uniform" and all(len(c["halves"]) == 2 for c in cands)
    # the real number is the sequential prune's, not the proxy's (which fills the sensitivity table)
    assert all(c["real"] == pytest.approx(math.exp((math.log(c["halves"][0]) + math.log(c["halves"][1])) / 2),
                                          rel=1e-5) for c in cands)

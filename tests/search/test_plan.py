"""Search end to end: plan.yaml written, applied by prune --plan, refused for another architecture."""

from __future__ import annotations

import pytest
import yaml

from prunekit.config import DataOptions, PruneSettings
from prunekit.errors import PrunekitError
from prunekit.pipeline import prune
from prunekit.search.api import SearchData, search
from prunekit.search.plan import read_plan


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def _settings(**kw) -> PruneSettings:
    return PruneSettings(**({"finetune_epochs": 0.5, "lr": 1e-3, "batch_size": 16, "latency": False} | kw))


@pytest.fixture()
def structured_plan(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    out = tmp_path / "search"
    summary = search(str(clf), DataOptions(str(csv)), out, "params=0.6", steps=300, evals=3, ratios="0.3,0.5,0.7",
                     opts=SearchData(importance="l2"))
    return out / "plan.yaml", summary


def test_structured_search_writes_a_plan_that_prune_applies(trained_tiny, tmp_path, structured_plan):
    clf, csv = trained_tiny
    path, summary = structured_plan
    plan = read_plan(path)
    assert plan["granularity"] == "structured" and plan["budget"]["kind"] == "params"
    assert plan["budget"]["achieved_keep"] <= 0.6 + 1e-9
    assert plan["scores"]["metric"] == "accuracy" and plan["search"]["real_evaluations"] == 3
    assert plan["search"]["recover_epochs"] == 0.25  # finalists ranked after a short distilled recovery
    # ... by per-example KL to the unpruned model on validation + held-out train, paired against uniform
    ranking = plan["search"]["finalist_ranking"]
    assert summary["search"]["finalist_ranking"] == ranking
    assert ranking["metric"] == "kl" and ranking["heldout_train"] > 0
    assert ranking["examples"] == ranking["validation"] + ranking["heldout_train"]
    finalists = summary["search"]["candidates"]
    assert finalists[0]["label"] == "uniform" and finalists[0]["paired"]["gain"] == 0
    assert finalists[1]["label"] == "global"  # the other standard allocation is measured too
    assert all(c["loss"] is not None and c["loss"] >= 0 for c in finalists)
    chosen = finalists[ranking["chosen"]]
    assert plan["scores"]["heldout_kl"] == chosen["loss"]
    assert plan["scores"]["uniform_heldout_kl"] == finalists[0]["loss"]
    assert ranking["chosen"] == 0 or chosen["paired"]["z"] > ranking["margin"]  # only a gain beyond noise wins
    assert plan["architecture"]["num_layers"] == 2 and set(plan["heads"]) | set(plan["ffn"]) <= {0, 1}
    assert (path.parent / "search_trace.png").stat().st_size > 1000
    assert len(summary["search"]["trace"]) > 100
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "pruned", _settings(plan=str(path)))
    widths = plan["widths"]
    got = report["shapes"]["layers"]
    for layer, w in widths.items():
        assert got[layer]["ffn"] == w["ffn_kept"] and got[layer]["q_heads"] == w["heads_kept"]
    assert report["settings"]["prune"]["importance"] == "l2"  # the plan's criterion


def test_latency_budget_uses_a_cached_per_layer_table(trained_tiny, tmp_path, monkeypatch):
    clf, csv = trained_tiny
    # a tiny block's wall time is mostly noise: time it by its size, so the budget is reachable every run
    import prunekit.report.measure as measure

    def by_size(fn, **_kw) -> float:
        block = fn.__defaults__[0]
        return 1e-3 * sum(p.numel() for p in block.parameters())

    monkeypatch.setattr(measure, "median_ms", by_size)
    search(str(clf), DataOptions(str(csv)), tmp_path / "lat", "latency=0.99", steps=200, evals=2, ratios="0.5,0.7",
           opts=SearchData(importance="l2"))
    cached = (tmp_path / "cache" / "search" / "latency.json")
    assert cached.is_file()
    table = next(iter(yaml.safe_load(cached.read_text()).values()))
    assert {k.split(":")[0] for k in table} == {"heads", "ffn"}
    assert read_plan(tmp_path / "lat" / "plan.yaml")["budget"]["kind"] == "latency"


def test_unstructured_plan_sets_each_blocks_sparsity(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    search(str(clf), DataOptions(str(csv)), tmp_path / "s", "params=0.5", granularity="unstructured", steps=200,
           evals=2, ratios="0.3,0.6,0.9")
    plan = read_plan(tmp_path / "s" / "plan.yaml")
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "p", _settings(plan=str(tmp_path / "s" / "plan.yaml")))
    sp = report["layer_sparsity"]
    for i, target in enumerate(plan["block_sparsity"]):
        mine = [v for k, v in sp.items() if f"layer.{i}." in k]
        assert mine and all(v == pytest.approx(target, abs=0.01) for v in mine)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda p: p["ffn"].update({7: 0.5}), "layer 7, which does not exist"),
    (lambda p: p["architecture"].update(model_type="llama"), "made for a llama model"),
    (lambda p: p["architecture"].update(ffn=[128, 128]), "another architecture: ffn"),
    (lambda p: p["heads"].update({0: 1.0}), r"not in \[0, 1\)"),
])
def test_plan_for_another_model_is_refused(trained_tiny, tmp_path, structured_plan, edit, match):
    clf, csv = trained_tiny
    plan = read_plan(structured_plan[0])
    plan.setdefault("heads", {})
    edit(plan)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(plan))
    with pytest.raises(PrunekitError, match=match):
        prune(str(clf), DataOptions(str(csv)), tmp_path / "o", _settings(plan=str(bad)))
    assert not (tmp_path / "o").exists()


def test_plan_file_errors(trained_tiny, tmp_path, structured_plan):
    clf, csv = trained_tiny
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(PrunekitError, match="not a prunekit plan"):
        prune(str(clf), DataOptions(str(csv)), tmp_path / "o", _settings(plan=str(tmp_path / "x.yaml")))
    with pytest.raises(PrunekitError, match="does not exist"):
        prune(str(clf), DataOptions(str(csv)), tmp_path / "o", _settings(plan=str(tmp_path / "none.yaml")))
    with pytest.raises(PrunekitError, match="do not combine"):
        prune(str(clf), DataOptions(str(csv)), tmp_path / "o", _settings(plan=str(structured_plan[0]), ffn=0.5))


def test_search_bad_input(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    with pytest.raises(PrunekitError, match="cannot be met"):
        search(str(clf), DataOptions(str(csv)), tmp_path / "a", "params=0.01", steps=50, evals=1, ratios="0.5")
    with pytest.raises(PrunekitError, match="latency budget needs structured"):
        search(str(clf), DataOptions(str(csv)), tmp_path / "b", "latency=0.5", granularity="unstructured")
    with pytest.raises(PrunekitError, match="recover-epochs"):
        search(str(clf), DataOptions(str(csv)), tmp_path / "c", "params=0.5", granularity="unstructured",
               opts=SearchData(recover_epochs=0.5))
    with pytest.raises(PrunekitError, match="--rank must be kl or accuracy"):
        search(str(clf), DataOptions(str(csv)), tmp_path / "d", "params=0.5", opts=SearchData(finalist_metric="f1"))
    with pytest.raises(PrunekitError, match="--margin"):
        search(str(clf), DataOptions(str(csv)), tmp_path / "e", "params=0.5", opts=SearchData(margin=-1))
    assert not any((tmp_path / d).exists() for d in "abcde")


def test_accuracy_ranking_is_the_old_rule(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    summary = search(str(clf), DataOptions(str(csv)), tmp_path / "s", "params=0.6", steps=200, evals=2,
                     ratios="0.5", opts=SearchData(importance="l2", finalist_metric="accuracy"))
    plan = summary["plan"]
    assert "finalist_ranking" not in plan["search"] and "heldout_kl" not in plan["scores"]
    finalists = summary["search"]["candidates"]
    assert plan["scores"]["validation"] == max(c["real"] for c in finalists)


def test_lm_search_plan_goes_through_oneshot_block_ratios(tiny_lm, tiny_text, tmp_path):
    from prunekit.pipeline_lm import prune_lm
    from prunekit.prune.oneshot import OneShotSettings

    opts = SearchData(task="lm", seq_len=16, lm_calib_samples=4, lm_eval_windows=2)
    search(str(tiny_lm), str(tiny_text), tmp_path / "s", "params=0.5", steps=200, evals=2, ratios="0.3,0.5,0.7",
           opts=opts)
    plan = read_plan(tmp_path / "s" / "plan.yaml")
    assert plan["granularity"] == "unstructured" and plan["scores"]["metric"] == "perplexity"
    blocks = plan["block_sparsity"]
    assert sum(blocks) / len(blocks) >= 0.5 - 1e-3
    report = prune_lm(str(tiny_lm), str(tiny_text), tmp_path / "p",
                      OneShotSettings(method="wanda", block_ratios=blocks), calib_samples=4, seq_len=16,
                      eval_samples=2, plan=plan)
    assert report["block_sparsity_targets"] == pytest.approx(blocks)
    plan["block_sparsity"] = blocks + [0.5]
    with pytest.raises(PrunekitError, match="3 per-block sparsities but the model has 2"):
        prune_lm(str(tiny_lm), str(tiny_text), tmp_path / "q", OneShotSettings(method="wanda", block_ratios=blocks),
                 calib_samples=4, seq_len=16, eval_samples=2, plan=plan)

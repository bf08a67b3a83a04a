"""Honest speed: every stage timed in the same interleaved rounds at the end of a run, with the rounds'
spread, and a speedup flagged when its rounds disagree by more than the speedup itself."""

from __future__ import annotations

import pytest
import torch

from prunekit.config import DataOptions, PruneSettings
from prunekit.pipeline import prune
from prunekit.report import measure
from prunekit.report.measure import StageLatency, interleaved_latency, ratio_record, speedup
from prunekit.report.render import delta_summary, render_markdown, stage_table


def test_every_round_times_every_stage_in_turn():
    calls = []

    def fake(name, ms):
        def timer():
            calls.append(name)
            return {"batch_1": ms[len([c for c in calls if c == name]) - 1]}
        return timer

    samples = interleaved_latency({"baseline": fake("baseline", [10.0, 11.0, 12.0]),
                                   "final": fake("final", [5.0, 6.0, 7.0])}, rounds=3)
    assert calls == ["baseline", "final"] * 3
    assert samples == {"baseline": {"batch_1": [10.0, 11.0, 12.0]}, "final": {"batch_1": [5.0, 6.0, 7.0]}}


def test_stage_latency_times_only_the_stages_kept_and_writes_median_rounds_spread():
    calls = []
    kept, dropped, final = {"name": "baseline"}, {"name": "step_1"}, {"name": "final"}
    timings = StageLatency(rounds=2)
    for record, ms in ((kept, 10.0), (dropped, 9.0), (final, 4.0)):
        timings.add(record, lambda r=record, ms=ms: calls.append(r["name"]) or {"batch_1": ms})
    timings.run([kept, final])  # step_1 was dropped (e.g. by --max-drop): not timed
    assert calls == ["baseline", "final", "baseline", "final"]
    assert kept["latency_ms"] == {"batch_1": 10.0} and kept["latency_rounds"] == {"batch_1": [10.0, 10.0]}
    assert kept["latency_spread"] == {"batch_1": 0.0} and "latency_ms" not in dropped


def test_rounds_that_agree_are_reliable():
    r = ratio_record([10.0, 10.4, 9.8], [10.1, 10.2, 9.9])
    assert r["ratio"] == pytest.approx(1.0, abs=0.02) and r["spread"] < 0.05 and r["reliable"] is True
    assert r["round_ratios"] == pytest.approx([10 / 10.1, 10.4 / 10.2, 9.8 / 9.9])


def test_rounds_that_disagree_by_40_percent_are_flagged():
    r = ratio_record([10.0, 10.0, 10.0], [10 / 0.8, 10.0, 10 / 1.2])  # per-round ratios 0.8, 1.0, 1.2
    assert r["ratio"] == pytest.approx(1.0) and r["spread"] == pytest.approx(0.4) and r["reliable"] is False
    # the same disagreement around a 3× speedup is smaller than the speedup itself: the direction holds
    assert ratio_record([30.0, 30.0, 30.0], [30 / 2.4, 10.0, 30 / 3.6])["reliable"] is True
    # one round, or rounds not paired: a ratio, but nothing to vouch for it
    assert ratio_record([10.0], [5.0]) == {"ratio": 2.0, "spread": None, "reliable": None, "round_ratios": None}


def _stage(name, rounds):
    return {"name": name, "metrics": {"accuracy": 0.9}, "latency_ms": {k: sorted(v)[1] for k, v in rounds.items()},
            "latency_rounds": rounds, "latency_spread": {k: measure.spread(v) for k, v in rounds.items()}}


def test_summary_table_and_markdown_say_which_ratio_is_noise():
    stages = [_stage("baseline", {"batch_1": [10.0, 10.0, 10.0], "batch_32": [300.0, 300.0, 300.0]}),
              _stage("final", {"batch_1": [12.5, 10.0, 10 / 1.2], "batch_32": [100.0, 101.0, 99.0]})]
    sp = speedup(stages)
    assert sp["baseline"] == "baseline" and sp["final"] == "final"
    assert sp["by_batch"]["batch_1"]["reliable"] is False and sp["by_batch"]["batch_32"]["reliable"] is True
    text = delta_summary(stages)
    assert "1.00× (b1, unreliable: rounds disagree by 40 %)" in text
    assert "3.00× (b32, rounds agree within 2 %)" in text
    _, rows = stage_table(stages)
    assert "10.0 ±21%" in rows[1]  # median ± half the rounds' range
    md = render_markdown({"stages": stages})
    assert "unreliable: rounds disagree by 40 %" in md and "median of 3 rounds" in md


def test_pipeline_times_baseline_and_final_copies_in_the_same_rounds_at_the_end(trained_tiny, tmp_path,
                                                                              monkeypatch):
    """The fake timer records which stage's model it got (by its sparsity): the stages must alternate
    round after round, each a copy of the model as it was at that stage, all after the run."""
    clf, csv = trained_tiny
    seen = []

    def fake_latency(model, make_inputs, batch_sizes=(1, 32), seq_len=128, **kw):
        weights = [p for p in model.bert.encoder.parameters() if p.dim() == 2]
        seen.append(round(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights), 1))
        return {f"batch_{b}": 10.0 - 5 * seen[-1] for b in batch_sizes}

    monkeypatch.setattr(measure, "measure_latency", fake_latency)
    settings = PruneSettings(sparsity=0.5, finetune_epochs=0.2, lr=1e-3, batch_size=16, schedule="oneshot")
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "o", settings)
    names = [s["name"] for s in report["stages"]]
    assert names == ["baseline", "pruned", "final"]
    assert seen == [0.0, 0.5, 0.5] * 3
    for stage in report["stages"]:
        assert set(stage["latency_ms"]) == set(stage["latency_rounds"]) == set(stage["latency_spread"]) \
            == {"batch_1", "batch_32"}
        assert all(len(v) == 3 for v in stage["latency_rounds"].values())
    ratio = report["speedup"]["by_batch"]["batch_1"]
    assert ratio["ratio"] == pytest.approx(10.0 / 7.5) and ratio["round_ratios"] == [pytest.approx(10 / 7.5)] * 3
    assert ratio["reliable"] is True
    assert "speedup" in (tmp_path / "o" / "report.json").read_text()


def test_lm_report_times_dense_and_pruned_together(tiny_lm, tiny_text, tmp_path, monkeypatch):
    from prunekit.pipeline_lm import StructuredLM, prune_lm

    seen = []

    def fake_latency(model, make_inputs, batch_sizes=(1, 32), seq_len=128, **kw):
        seen.append(model.model.layers[0].mlp.down_proj.in_features)
        return {f"batch_{b}": float(seen[-1]) for b in batch_sizes}

    monkeypatch.setattr(measure, "measure_latency", fake_latency)
    torch.manual_seed(0)
    report = prune_lm(str(tiny_lm), str(tiny_text), tmp_path / "o", None, structured=StructuredLM(ffn=0.5),
                      calib_samples=8, seq_len=32, eval_samples=4)
    dense, pruned = report["stages"]
    width = dense["latency_ms"]["batch_1"]
    assert seen == [width, width // 2] * 3  # the dense model (reloaded) and the pruned one, round after round
    assert dense["latency_rounds"]["batch_8"] == [width] * 3
    assert report["speedup"]["by_batch"]["batch_8"]["ratio"] == pytest.approx(2.0)

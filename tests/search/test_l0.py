"""L0 gates: hard-concrete gates learned to a params budget, then removed for a physically smaller model."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.config import DataOptions, PruneSettings
from prunekit.errors import PrunekitError
from prunekit.pipeline import prune
from prunekit.search.budget import Budget
from prunekit.search.l0 import GatedModel, Gates, _deterministic, _p_open, finalize


def test_hard_concrete_limits():
    la = torch.tensor([-10.0, 0.0, 10.0])
    assert _deterministic(la).tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-3)
    p = _p_open(la)
    assert p[0] < 0.01 and p[2] > 0.99


def test_open_gates_leave_the_model_unchanged_and_closed_ones_remove_groups(tiny_model):
    batch = {"input_ids": torch.randint(5, 30, (2, 6))}
    with torch.no_grad():
        ref = tiny_model(**batch).logits
    gates = Gates(tiny_model, Budget("params", 0.5), total_steps=10, lr=1e-3)
    gated = GatedModel(tiny_model, gates).eval()
    with torch.no_grad():
        assert torch.allclose(gated(**batch).logits, ref, atol=1e-5)  # init: every gate fully open
        gates.ffn[0].fill_(-20.0 / gates.scale)  # close layer 0's FFN except what finalize must keep
        gates.heads[1][0] = -20.0 / gates.scale
        masked = gated(**batch).logits
    decided = finalize(tiny_model, gates)
    assert decided["ffn"][0] == 1 and decided["heads"][1] == 1
    with torch.no_grad():
        cut = tiny_model(**batch).logits
    assert cut.shape == masked.shape
    assert decided["kept_fraction"] <= 0.5 + 1e-9


def test_learn_structure_meets_the_budget_and_reloads(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    out = tmp_path / "l0"
    report = prune(str(clf), DataOptions(str(csv)), out,
                   PruneSettings(learn_structure=True, budget="params=0.5", finetune_epochs=2, lr=1e-3,
                                 batch_size=16, latency=False))
    learned = report["learned_structure"]
    assert learned["kept_fraction"] <= 0.5 + 1e-9
    traj = learned["trajectory"]
    assert traj[0]["target"] == pytest.approx(1.0) and traj[-1]["target"] == pytest.approx(0.5)
    assert traj[-1]["expected_keep"] < traj[0]["expected_keep"]
    base, final = report["stages"][0], report["stages"][-1]
    assert final["params_total"] < base["params_total"]
    assert [s["name"] for s in report["stages"]] == ["baseline", "pruned", "final"]
    assert (out / "l0_gates.png").stat().st_size > 1000
    model = prunekit.load(out)
    assert sum(p.numel() for p in model.parameters()) == final["params_total"]


@pytest.mark.parametrize(("kw", "match"), [
    ({"learn_structure": True}, "needs a --budget"),
    ({"learn_structure": True, "budget": "macs=0.5"}, "supports params="),
    ({"learn_structure": True, "budget": "params=0.5", "ffn": 0.5}, "do not combine"),
    ({"budget": "params=0.5"}, "goes with --learn-structure"),
])
def test_learn_structure_bad_input(trained_tiny, tmp_path, kw, match):
    clf, csv = trained_tiny
    with pytest.raises(PrunekitError, match=match):
        prune(str(clf), DataOptions(str(csv)), tmp_path / "o", PruneSettings(latency=False, **kw))

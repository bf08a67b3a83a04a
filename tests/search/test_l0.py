"""L0 gates: hard-concrete gates learned to a params budget, then removed for a physically smaller model."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.config import DataOptions, PruneSettings
from prunekit.errors import PrunekitError
from prunekit.pipeline import prune
from prunekit.search.budget import Budget
from prunekit.search.l0 import GatedModel, Gates, L0Settings, _deterministic, _p_open, finalize


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
    assert learned["layers_kept"] == [0, 1]  # no layer gates unless --learn-layers
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
    ({"learn_layers": True}, "add --learn-structure"),
])
def test_learn_structure_bad_input(trained_tiny, tmp_path, kw, match):
    clf, csv = trained_tiny
    with pytest.raises(PrunekitError, match=match):
        prune(str(clf), DataOptions(str(csv)), tmp_path / "o", PruneSettings(latency=False, **kw))


def _drive_to_budget(model, steps: int = 200, lr: float = 2e-4) -> list[float]:
    """The size term alone (no task loss), in AdamW with the recovery loop's linear schedule: every gate
    feels the same pressure, so they all move together — the hardest case for the multipliers."""
    from transformers import get_linear_schedule_with_warmup

    gates = Gates(model, Budget("params", 0.5), total_steps=steps, lr=lr)
    gates.train()
    opt = torch.optim.AdamW(gates.parameters(), lr=lr, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    seen = []
    for _ in range(steps):
        target = gates.target()
        loss = gates.lagrangian()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        gates.step += 1
        with torch.no_grad():
            seen.append((target, float(gates.expected_keep())))
    return seen


def test_lagrangian_tracks_the_target_without_overshooting(tiny_model):
    """The expected size follows the ramp down to the budget and stays there. With the multipliers in Adam
    (a fixed step whatever the violation) λ1 kept growing after the target was met and the expected size
    fell to ~0.2 at params=0.5, so finalize removed far more than the budget asked."""
    seen = _drive_to_budget(tiny_model)
    undershoot = max(t - e for t, e in seen)
    assert undershoot < 0.05, undershoot  # E starts at 0.98 (gates open, not shut) with the target at 1
    assert abs(seen[-1][1] - 0.5) < 0.02, seen[-1]


def test_layer_gates_only_when_asked_for(tiny_model):
    """Layer gates are opt-in (they closed MiniLM's first three layers outright); when on, a closed one
    removes its layer."""
    batch = {"input_ids": torch.randint(5, 30, (2, 6))}
    default = Gates(tiny_model, Budget("params", 0.5), total_steps=10, lr=1e-3)
    assert not default.s.layers and len(default._handles) == 2 * default.n_layers
    default.remove_hooks()
    gates = Gates(tiny_model, Budget("params", 0.5), total_steps=10, lr=1e-3, settings=L0Settings(layers=True))
    gated = GatedModel(tiny_model, gates).eval()
    with torch.no_grad():
        gates.layer[1] = -20.0 / gates.scale
        gated(**batch)
    decided = finalize(tiny_model, gates)
    assert decided["layers_kept"] == [0]

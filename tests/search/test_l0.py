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


def test_open_gates_leave_the_model_unchanged_and_the_cut_model_computes_what_the_gated_one_did(tiny_model):
    """A budget the closed gates already meet (0.63 kept ≤ 0.7), so finalize removes exactly the closed
    groups and folds the half-open gates into the weights: the cut model's logits equal the gated model's
    (gates evaluated deterministically, i.e. in eval mode)."""
    batch = {"input_ids": torch.randint(5, 30, (2, 6), generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        ref = tiny_model(**batch).logits
    gates = Gates(tiny_model, Budget("params", 0.7), total_steps=10)
    gated = GatedModel(tiny_model, gates).eval()
    with torch.no_grad():
        assert torch.allclose(gated(**batch).logits, ref, atol=1e-5)  # init: every gate fully open
        gates.ffn[0].fill_(-20.0)  # close layer 0's FFN except what finalize must keep
        gates.heads[1][0] = -20.0
        gates.ffn[1][:8] = 0.0  # half open (z = 0.5): stays, its value folded into the weights
        masked = gated(**batch).logits
    decided = finalize(tiny_model, gates)
    assert decided["ffn"] == [1, 64] and decided["heads"] == [2, 1]
    assert decided["kept_fraction"] <= 0.7
    with torch.no_grad():
        cut = tiny_model(**batch).logits
    assert torch.allclose(cut, masked, atol=1e-6)
    assert (cut - ref).abs().max() > 1e-4  # the closed and half-open gates did change the outputs
    assert tiny_model.bert.encoder.layer[0].intermediate.dense.out_features == 1


def test_finalize_removes_the_least_open_groups_until_the_budget_holds(tiny_model):
    gates = Gates(tiny_model, Budget("params", 0.5), total_steps=10)
    with torch.no_grad():
        gates.ffn[0].fill_(-20.0)
        gates.heads[1][0] = -20.0
    decided = finalize(tiny_model, gates)
    assert decided["ffn"][0] == 1 and decided["heads"][1] == 1
    assert decided["kept_fraction"] <= 0.5 + 1e-9


@pytest.mark.parametrize("warm", [0.0, None], ids=["equal-start", "ranked-start-default"])
def test_learn_structure_meets_the_budget_and_reloads(trained_tiny, tmp_path, warm):
    clf, csv = trained_tiny
    out = tmp_path / "l0"
    report = prune(str(clf), DataOptions(str(csv)), out,
                   PruneSettings(learn_structure=True, budget="params=0.5", finetune_epochs=2, lr=1e-3,
                                 batch_size=16, latency=False, gate_warm_start=warm, calib_batches=2))
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
    ({"gate_warm_start": 2.0}, "add --learn-structure"),
    ({"learn_structure": True, "budget": "params=0.5", "gate_warm_start": -1.0}, "must be >= 0"),
])
def test_learn_structure_bad_input(trained_tiny, tmp_path, kw, match):
    clf, csv = trained_tiny
    with pytest.raises(PrunekitError, match=match):
        prune(str(clf), DataOptions(str(csv)), tmp_path / "o", PruneSettings(latency=False, **kw))


def _drive_to_budget(model, steps: int = 200, noise: float = 0.0, scores=None, **settings) -> tuple[Gates, list[float]]:
    """The gate step on the size term alone (``noise`` > 0: plus a zero-mean random task gradient on every
    FFN neuron's gate, as noisy per parameter as on a head's, which gets none; ``scores``: a ranked start)."""
    gates = Gates(model, Budget("params", 0.5), total_steps=steps, settings=L0Settings(**settings))
    if scores is not None:
        gates.warm_start(scores)
    gates.train()
    gen = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(steps):
        if noise:
            for p, n in gates.gate_params()[gates.n_layers:]:
                p.grad = noise * torch.randn(p.shape, generator=gen) * n / gates.total
        target = gates.target()
        gates.update()
        gates.step += 1
        with torch.no_grad():
            seen.append((target, float(gates.expected_keep())))
    return gates, seen


def test_lagrangian_tracks_the_target_without_overshooting(tiny_model):
    """The expected size follows the ramp down to the budget and stays there. With the multipliers in Adam
    (a fixed step whatever the violation) λ1 kept growing after the target was met and the expected size
    fell to ~0.2 at params=0.5, so finalize removed far more than the budget asked."""
    _, seen = _drive_to_budget(tiny_model)
    undershoot = max(t - e for t, e in seen)
    assert undershoot < 0.05, undershoot  # E starts at 0.98 (gates open, not shut) with the target at 1
    assert abs(seen[-1][1] - 0.5) < 0.02, seen[-1]


def _kept(gates: Gates, kind: str) -> float:
    return float(torch.cat([_p_open(p.detach()) for p in getattr(gates, kind)]).mean())


def test_big_groups_do_not_win_the_race_to_close(tiny_model):
    """Heads and FFN neurons under the same size pressure, the neurons' gates with a noisy (zero-mean) task
    gradient: both kinds close about equally. In per-gate Adam the noise slowed the neurons' gates while the
    heads' steady size gradient closed them at full speed (MiniLM kept 13 of 72 heads)."""
    gates, seen = _drive_to_budget(tiny_model, noise=30.0)
    assert abs(seen[-1][1] - 0.5) < 0.03, seen[-1]
    assert abs(_kept(gates, "heads") - _kept(gates, "ffn")) < 0.1, (_kept(gates, "heads"), _kept(gates, "ffn"))


def test_the_size_term_survives_distillation(trained_tiny, tmp_path):
    """The size term is the gates' own, not part of the loss, so a distillation loss (which replaces the
    model's loss) still drives the gates to the budget."""
    clf, csv = trained_tiny
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "d",
                   PruneSettings(learn_structure=True, budget="params=0.5", finetune_epochs=2, lr=1e-3,
                                 batch_size=16, latency=False, distill=True))
    traj = report["learned_structure"]["trajectory"]
    assert traj[-1]["expected_keep"] < 0.7, traj[-1]


def test_layer_gates_only_when_asked_for(tiny_model):
    """Layer gates are opt-in (they closed MiniLM's first three layers outright); when on, a closed one
    removes its layer."""
    batch = {"input_ids": torch.randint(5, 30, (2, 6))}
    default = Gates(tiny_model, Budget("params", 0.5), total_steps=10)
    assert not default.s.layers and len(default._handles) == 2 * default.n_layers
    default.remove_hooks()
    gates = Gates(tiny_model, Budget("params", 0.5), total_steps=10, settings=L0Settings(layers=True))
    gated = GatedModel(tiny_model, gates).eval()
    with torch.no_grad():
        gates.layer[1] = -20.0
        gated(**batch)
    decided = finalize(tiny_model, gates)
    assert decided["layers_kept"] == [0]


def test_warm_start_closes_the_least_important_first(tiny_model):
    """A ranked start (Gates.warm_start): under the size term alone, the groups the scores rank lowest close
    and the highest stay, in every layer; with equal starts nothing tells them apart."""
    from prunekit.prune.structured import GroupScores

    probe = Gates(tiny_model, Budget("params", 0.5), total_steps=10)
    gen = torch.Generator().manual_seed(1)
    scores = GroupScores(heads={i: torch.rand(len(p), generator=gen) for i, p in enumerate(probe.heads)},
                         ffn={i: torch.rand(len(p), generator=gen) for i, p in enumerate(probe.ffn)})
    probe.remove_hooks()
    gates, seen = _drive_to_budget(tiny_model, warm_spread=3.0, scores=scores)
    assert abs(seen[-1][1] - 0.5) < 0.03, seen[-1]
    for i in range(gates.n_layers):
        for kind in ("heads", "ffn"):
            la = getattr(gates, kind)[i].detach()
            s = getattr(scores, kind)[i]
            assert float(la[s.argmax()]) == float(la.max()) and float(la[s.argmin()]) == float(la.min())
            open_ = _deterministic(la) > 0
            assert 0 < int(open_.sum()) < len(la), (kind, i, la)  # equal starts: all or nothing
            assert float(s[~open_].max()) < float(s[open_].min()), (kind, i, s, la)  # the low ones closed


def test_warm_start_needs_one_score_per_gate(tiny_model):
    from prunekit.prune.structured import GroupScores

    gates = Gates(tiny_model, Budget("params", 0.5), total_steps=10, settings=L0Settings(warm_spread=1.0))
    with pytest.raises(PrunekitError, match="scores for"):
        gates.warm_start(GroupScores(ffn={0: torch.ones(len(gates.ffn[0]) + 1)}))

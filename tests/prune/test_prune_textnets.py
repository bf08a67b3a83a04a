"""Removing RNN hidden units, conv filters and embedding dims for real equals zeroing them in place."""

from __future__ import annotations

import pytest
import torch
from _textnet_zoo import RECURRENT_CASES, StackedRNN, UserCNN, batch, one_thread, tiny  # noqa: F401
from torch import nn

from prunekit.arch import prunable_weights
from prunekit.errors import PrunekitError
from prunekit.importance.groups import group_scores
from prunekit.prune import MaskSet, compute_masks
from prunekit.prune.surgery import keep_rnn_units
from prunekit.prune.textnets import (
    TextPlan,
    apply_text_plan,
    check_text_ratios,
    text_groups,
    text_masks,
    text_plan_from_ratios,
)


def _logits(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**b) if hasattr(model, "config") else model(b["input_ids"])
    return getattr(out, "logits", out)


def _random_plan(model: nn.Module, seed: int = 0, **ratios: float) -> TextPlan:
    scores = group_scores(model, "random", seed=seed).units
    return text_plan_from_ratios(model, scores, **ratios)


def _check_equivalent(model: nn.Module, plan: TextPlan, b: dict[str, torch.Tensor]) -> None:
    before = _logits(model, b)
    masked = _logits(text_masks(model, plan), b)
    params = sum(p.numel() for p in model.parameters())
    apply_text_plan(model, plan)
    after = _logits(model, b)
    assert sum(p.numel() for p in model.parameters()) < params  # physically smaller
    assert (after - masked).abs().max() <= 1e-5
    assert (after - before).abs().max() > 1e-2  # the cut mattered, so the equality above is not vacuous


@pytest.mark.parametrize(("model_type", "layers", "bidirectional"), RECURRENT_CASES)
def test_removing_units_equals_masking_them(model_type, layers, bidirectional):
    model = tiny(model_type, layers, bidirectional)
    plan = _random_plan(model, units=0.4, embedding=0.25)
    _check_equivalent(model, plan, batch())
    assert model.rnn.hidden_size == 6 and model.rnn.input_size == 9 and model.embedding.embedding_dim == 9
    assert model.classifier.in_features == 6 * (2 if bidirectional else 1)
    assert model.config.hidden_size == 6 and model.config.embed_dim == 9


def test_every_gate_row_of_a_unit_goes_together():
    model = tiny("lstm", 2, True)
    keep = [0, 2, 3, 7, 9]
    plan = TextPlan({name: keep for name in ("rnn.l0", "rnn.l0_reverse", "rnn.l1", "rnn.l1_reverse")})
    old = {n: p.detach().clone() for n, p in model.rnn.named_parameters()}
    apply_text_plan(model, plan)
    rows = torch.tensor([g * 10 + k for g in range(4) for k in keep])
    torch.testing.assert_close(model.rnn.weight_ih_l0_reverse, old["weight_ih_l0_reverse"][rows])
    torch.testing.assert_close(model.rnn.weight_hh_l1, old["weight_hh_l1"][rows][:, keep])
    torch.testing.assert_close(model.rnn.bias_hh_l1_reverse, old["bias_hh_l1_reverse"][rows])
    below = torch.tensor(keep + [10 + k for k in keep])  # layer 1 reads [forward | reverse] of layer 0
    torch.testing.assert_close(model.rnn.weight_ih_l1, old["weight_ih_l1"][rows][:, below])


def test_filters_and_embedding_of_a_textcnn():
    model = tiny("textcnn")
    plan = _random_plan(model, filters=0.5, embedding=0.25)
    _check_equivalent(model, plan, batch())
    assert model.config.num_filters == [3, 3, 2] and model.classifier.in_features == 8  # round(2.5) = 2 removed
    assert model.config.embed_dim == 9


def test_global_scope_gives_uneven_filters_but_one_hidden_size_per_rnn():
    model = tiny("textcnn")
    scores = {g.name: torch.arange(g.count, dtype=torch.float) * (i + 1) for i, g in enumerate(text_groups(model))}
    plan = text_plan_from_ratios(model, scores, filters=0.5, scope="global")
    assert len({len(plan.keep[f"convs.{i}"]) for i in range(3)}) > 1
    model = tiny("lstm", 2, True)
    scores = {g.name: torch.rand(g.count) * (i + 1) for i, g in enumerate(text_groups(model))}
    plan = text_plan_from_ratios(model, scores, units=0.5, scope="global")
    assert len({len(v) for v in plan.keep.values()}) == 1
    apply_text_plan(model, plan)


@pytest.mark.parametrize("build", [StackedRNN, UserCNN])
def test_a_users_own_module_is_traced_and_pruned_exactly(build):
    torch.manual_seed(0)
    model = build().eval()
    ratios = {"units": 0.5} if build is StackedRNN else {"filters": 0.5}
    plan = _random_plan(model, embedding=0.25, **ratios)
    _check_equivalent(model, plan, batch())
    if build is StackedRNN:  # the second module's input follows the first's kept units; the head both directions
        assert model.first.hidden_size == 5 == model.second.input_size and model.out.in_features == 6


def test_a_ratio_removing_every_unit_is_a_clear_error_and_changes_nothing():
    model = tiny("lstm", hidden_size=4)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(PrunekitError, match=r"remove every hidden unit of rnn.l0"):
        check_text_ratios(model, units=0.9)
    with pytest.raises(PrunekitError, match="no filters"):
        check_text_ratios(model, filters=0.5)
    with pytest.raises(PrunekitError, match="nothing would be kept"):
        apply_text_plan(model, TextPlan({"rnn.l0": []}))
    with pytest.raises(PrunekitError, match="same number of units"):
        apply_text_plan(tiny("lstm", 1, True), TextPlan({"rnn.l0": [0, 1]}))
    with pytest.raises(PrunekitError, match="same number of units"):
        keep_rnn_units(nn.LSTM(3, 4, bidirectional=True), {(0, 0): [0], (0, 1): [0, 1]})
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())


def test_unstructured_masks_cover_recurrent_and_conv_weights():
    model = tiny("gru", 2, True)
    params = prunable_weights(model)
    assert set(params) == {f"rnn.weight_{k}_l{i}{s}" for k in ("ih", "hh") for i in (0, 1) for s in ("", "_reverse")}
    masks = MaskSet(params)
    masks.update(compute_masks({n: p.abs() for n, p in params.items()}, 0.6))
    assert masks.sparsity() == pytest.approx(0.6, abs=0.01)
    _logits(model, batch())
    assert set(prunable_weights(tiny("textcnn"))) == {f"convs.{i}.weight" for i in range(3)}
    assert set(prunable_weights(model, include="classifier|embedding")) == {"classifier.weight", "embedding.weight"}

"""Group importance: the criteria sum over exactly the slices that structured pruning removes together."""


import _structured_zoo as zoo  # tests/ is on pytest's pythonpath
import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.importance import Taylor
from prunekit.importance.groups import (
    activation_scores,
    group_scores,
    layer_scores,
    random_scores,
    taylor_weights,
    weight_group_scores,
)
from prunekit.prune import plan_from_ratios

one_thread = zoo.one_thread  # autouse fixture
D = zoo.HIDDEN // zoo.HEADS  # head size 8


@torch.no_grad()
def test_l1_of_a_bert_head_is_the_sum_over_its_q_k_v_rows_and_o_columns():
    model = zoo.build("bert")
    s = model.bert.encoder.layer[1].attention
    h = slice(2 * D, 3 * D)
    want = sum(float(m.weight[h].abs().sum()) for m in (s.self.query, s.self.key, s.self.value))
    want += float(s.output.dense.weight[:, h].abs().sum())
    scores = weight_group_scores(model, "l1")
    assert scores.heads[1][2].item() == pytest.approx(want, rel=1e-5)
    assert torch.equal(scores.kv[1], scores.heads[1])  # multi-head attention: one group per head


@torch.no_grad()
def test_l2_of_a_gated_ffn_neuron_and_a_gqa_group():
    model = zoo.build("llama")
    mlp, attn = model.model.layers[0].mlp, model.model.layers[0].self_attn
    want = (mlp.gate_proj.weight[7].pow(2).sum() + mlp.up_proj.weight[7].pow(2).sum()
            + mlp.down_proj.weight[:, 7].pow(2).sum()).sqrt()
    scores = weight_group_scores(model, "l2")
    assert scores.ffn[0][7].item() == pytest.approx(want.item(), rel=1e-5)
    # kv group 1 = kv head 1 (k, v rows) + its query heads 2 and 3 (q rows, o columns)
    g = slice(D, 2 * D)
    q = slice(2 * D, 4 * D)
    want = (attn.k_proj.weight[g].pow(2).sum() + attn.v_proj.weight[g].pow(2).sum()
            + attn.q_proj.weight[q].pow(2).sum() + attn.o_proj.weight[:, q].pow(2).sum()).sqrt()
    assert scores.kv[0][1].item() == pytest.approx(want.item(), rel=1e-5)
    # a query head alone: its q rows and o columns only (k/v are shared by the group)
    want = (attn.q_proj.weight[:D].pow(2).sum() + attn.o_proj.weight[:, :D].pow(2).sum()).sqrt()
    assert scores.heads[0][0].item() == pytest.approx(want.item(), rel=1e-5)


@torch.no_grad()
def test_gpt2_fused_qkv_and_tied_head_counted_once():
    model = zoo.build("gpt2")
    attn = model.transformer.h[0].attn
    w = attn.c_attn.weight  # Conv1D: (in, 3*out); q | k | v side by side
    want = sum(float(w[:, off + D:off + 2 * D].abs().sum()) for off in (0, zoo.HIDDEN, 2 * zoo.HIDDEN))
    want += float(attn.c_proj.weight[D:2 * D].abs().sum())
    scores = weight_group_scores(model, "l1")
    assert scores.heads[0][1].item() == pytest.approx(want, rel=1e-5)
    # hidden dim 3: the tied wte/lm_head weight contributes its column once
    col = float(model.transformer.wte.weight[:, 3].abs().sum())
    untied = weight_group_scores(_untie(zoo.build("gpt2")), "l1")
    assert untied.hidden[3].item() == pytest.approx(scores.hidden[3].item() + col, rel=1e-5)


def _untie(model):
    model.lm_head.weight = torch.nn.Parameter(model.transformer.wte.weight.detach().clone())
    return model


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_taylor_from_batches_equals_taylor_from_accumulated_weights(family):
    model = zoo.build(family)
    batches = [zoo.labelled(family, seed) for seed in (1, 2)]
    from_batches = group_scores(model, "taylor", batches=batches, layers="groups")
    # the pipeline's way: a Taylor criterion fed after each backward, keyed by *module* name
    crit = Taylor()
    params = {n.removesuffix(".weight"): p for n, p in model.named_parameters()}
    for b in batches:
        model.zero_grad()
        model(**b).loss.backward()
        crit.accumulate(params)
    accumulated = group_scores(model, "taylor", weight_scores=crit.state(), layers="groups")
    for layer in range(zoo.LAYERS):
        assert torch.allclose(from_batches.heads[layer], accumulated.heads[layer], rtol=1e-4)
        assert torch.allclose(from_batches.ffn[layer], accumulated.ffn[layer], rtol=1e-4)
    assert from_batches.heads[0].min() > 0


def test_taylor_weights_are_keyed_by_parameter_and_leave_no_gradients():
    model = zoo.build("bert")
    w = taylor_weights(model, [zoo.labelled("bert")])
    assert "bert.encoder.layer.0.attention.self.query.weight" in w
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(PrunekitError, match="need labels"):
        taylor_weights(model, [zoo.inputs()])


def test_activation_scores_see_a_silenced_head_and_neuron():
    model = zoo.build("bert")
    layer = model.bert.encoder.layer[0]
    with torch.no_grad():
        layer.attention.self.value.weight[D:2 * D] = 0  # head 1 outputs exactly 0
        layer.attention.self.value.bias[D:2 * D] = 0
        layer.intermediate.dense.weight[5] = 0  # neuron 5 outputs gelu(bias)
        layer.intermediate.dense.bias[5] = -30.0  # ... which is ~0
    s = activation_scores(model, [zoo.inputs(1), zoo.inputs(2)])
    assert s.heads[0][1] == 0 and s.heads[0].argmin() == 1
    assert s.ffn[0][5] < 1e-6 and s.ffn[0].argmin() == 5
    assert s.hidden.shape == (zoo.HIDDEN,) and (s.hidden > 0).all()


def test_activation_kv_group_is_the_mean_of_its_query_heads():
    model = zoo.build("llama")
    s = activation_scores(model, [zoo.inputs()])
    assert torch.allclose(s.kv[1], s.heads[1].view(2, 2).mean(1))


def test_random_is_seeded():
    model = zoo.build("llama")
    a, b, c = random_scores(model, 0), random_scores(model, 0), random_scores(model, 1)
    assert torch.equal(a.ffn[2], b.ffn[2]) and torch.equal(a.layers, b.layers)
    assert not torch.equal(a.ffn[2], c.ffn[2])


def test_skip_score_ranks_a_dead_layer_lowest_and_the_plan_removes_it():
    model = zoo.build("llama")
    mid = model.model.layers[1]
    with torch.no_grad():  # pre-LN: with o and down zeroed the block adds nothing to the residual
        mid.self_attn.o_proj.weight.zero_()
        mid.mlp.down_proj.weight.zero_()
    scores = group_scores(model, "l2", batches=[zoo.inputs()])
    assert scores.layers[1] == 0 and (scores.layers[[0, 2]] > 0).all()
    plan = plan_from_ratios(model, scores, heads=0, ffn=0, layers=1 / 3)
    assert plan.layers == [0, 2]


def _dead_middle_layer() -> torch.nn.Module:
    """A LLaMA whose layer 1 adds nothing to the residual stream (pre-LN, o and down zeroed)."""
    model = zoo.build("llama")
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    return model


@pytest.mark.parametrize("how", ["greedy", "loss", "skip", "bi"])
def test_every_layer_criterion_ranks_a_dead_layer_lowest(how):
    model = _dead_middle_layer()
    scores = layer_scores(model, how, batches=[zoo.labelled("llama", 1), zoo.labelled("llama", 2)])
    assert scores.shape == (zoo.LAYERS,)
    assert int(scores.argmin()) == 1
    if how != "greedy":  # removing a block that adds nothing costs nothing
        assert abs(float(scores[1])) < 1e-5 < float(scores[[0, 2]].min())


def test_greedy_is_a_removal_order_that_starts_with_the_cheapest_single_layer():
    model = zoo.build("bert")
    batches = [zoo.labelled("bert", 1), zoo.labelled("bert", 2)]
    greedy = layer_scores(model, "greedy", batches=batches)
    assert sorted(greedy.tolist()) == [0.0, 1.0, 2.0]
    assert int(greedy.argmin()) == int(layer_scores(model, "loss", batches=batches).argmin())
    early = layer_scores(model, "greedy", batches=batches, remove=1)
    assert int(early.argmin()) == int(greedy.argmin())
    unlabelled = [zoo.inputs(1), zoo.inputs(2)]  # no labels: greedy follows the change of the logits
    assert int(layer_scores(model, "greedy", batches=unlabelled).argmin()) == int(
        layer_scores(model, "skip", batches=unlabelled).argmin())
    with pytest.raises(PrunekitError, match="need labels"):
        layer_scores(model, "loss", batches=unlabelled)
    with pytest.raises(PrunekitError, match="unknown layer score"):
        layer_scores(model, "depth", batches=batches)


def test_layer_scores_from_groups_and_errors():
    model = zoo.build("distilbert")
    s = weight_group_scores(model, "l1")
    got = layer_scores(model, "groups", scores=s)
    assert got[2].item() == pytest.approx((s.kv[2].sum() + s.ffn[2].sum()).item())
    assert group_scores(model, "l1").layers is not None  # no batches: sum of groups
    with pytest.raises(PrunekitError, match="calibration batches"):
        layer_scores(model, "skip")
    with pytest.raises(PrunekitError, match="calibration batches"):
        group_scores(model, "activation")
    with pytest.raises(PrunekitError, match="unknown group criterion"):
        group_scores(model, "movement")

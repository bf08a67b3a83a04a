"""Structured pruning: the physically pruned model computes exactly what the masked model computes."""

import copy

import _structured_zoo as zoo  # tests/ is on pytest's pythonpath
import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.prune import (
    GroupScores,
    StructuredPlan,
    apply_plan,
    model_shapes,
    plan_from_ratios,
    prune_ffn,
    prune_heads,
    prune_hidden,
    prune_layers,
    structured_masks,
)
from prunekit.prune.structured import KeptDimsLayerNorm

one_thread = zoo.one_thread  # autouse fixture
TOL = 1e-4

# Per-layer kept heads: LLaMA has 4 query heads in 2 kv groups of 2, so its plans keep whole groups
# (layer 0), one query head per group (layer 1) or everything but one group (layer 2).
MHA_HEADS = {0: [1, 3], 1: [0], 2: [0, 1, 2]}
GQA_HEADS = {0: [2, 3], 1: [0, 3], 2: [0, 1]}
FFN_KEEP = {0: list(range(0, 48, 2)), 1: [5, 7, 11, 40], 2: list(range(30))}
HIDDEN_KEEP = [0, 1, 2, 5, 8, 9, 13, 14, 17, 20, 21, 22, 26, 27, 29, 31]

PLANS = {
    "heads": lambda fam: StructuredPlan(heads=GQA_HEADS if fam == "llama" else MHA_HEADS),
    "ffn": lambda fam: StructuredPlan(ffn=FFN_KEEP),
    "layers": lambda fam: StructuredPlan(layers=[0, 2]),
    "hidden": lambda fam: StructuredPlan(hidden=HIDDEN_KEEP),
    "uneven": lambda fam: StructuredPlan(heads=GQA_HEADS if fam == "llama" else MHA_HEADS, ffn=FFN_KEEP,
                                         layers=None if fam in zoo.SHARED_LAYERS else [1, 2], hidden=HIDDEN_KEEP),
}


@pytest.mark.parametrize("granularity", list(PLANS))
@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_pruned_equals_masked(family, granularity):
    model = zoo.build(family)
    plan = PLANS[granularity](family)
    if family in zoo.SHARED_LAYERS and plan.layers is not None:  # ALBERT: every pass uses every block
        with pytest.raises(PrunekitError, match="no single layer can be removed"):
            apply_plan(model, plan)
        return
    reference = structured_masks(model, plan)
    pruned = apply_plan(copy.deepcopy(model), plan)
    before, after, want = zoo.logits(model), zoo.logits(pruned), zoo.logits(reference)
    assert (after - want).abs().max() <= TOL
    assert (after - before).abs().max() > 1e-2  # the check is not vacuous: pruning changed the output
    assert zoo.n_params(pruned) < zoo.n_params(model)
    assert zoo.n_params(reference) == zoo.n_params(model)  # the reference really is masked, not pruned
    shapes = model_shapes(pruned)
    kept_layers = plan.layers if plan.layers is not None else list(range(zoo.LAYERS))
    assert shapes["num_layers"] == len(kept_layers) == pruned.config.num_hidden_layers
    assert shapes["hidden_size"] == (len(plan.hidden) if plan.hidden else zoo.HIDDEN) == pruned.config.hidden_size
    for new, old in enumerate(kept_layers):
        layer = shapes["layers"][new]
        assert layer["q_heads"] == len(plan.heads.get(old, range(zoo.HEADS)))
        assert layer["ffn"] == len(plan.ffn.get(old, range(zoo.FFN)))


def test_attention_module_attributes_follow_the_heads():
    bert = prune_heads(zoo.build("bert"), 1, [0, 2, 3])
    attn = bert.bert.encoder.layer[1].attention.self
    assert (attn.num_attention_heads, attn.all_head_size, attn.query.out_features) == (3, 24, 24)
    gpt2 = prune_heads(zoo.build("gpt2"), 0, [1])
    assert (gpt2.transformer.h[0].attn.num_heads, gpt2.transformer.h[0].attn.split_size) == (1, 8)
    assert gpt2.transformer.h[0].attn.c_attn.weight.shape == (32, 24)
    llama = prune_heads(zoo.build("llama"), 2, [1, 3])  # one query head in each of the two groups
    attn = llama.model.layers[2].self_attn
    assert attn.num_key_value_groups == 1 and attn.k_proj.out_features == 16 and attn.q_proj.out_features == 16
    llama = prune_heads(llama, 0, [0, 1])  # the first group whole, the second group gone
    attn = llama.model.layers[0].self_attn
    assert attn.num_key_value_groups == 2 and attn.k_proj.out_features == 8 and attn.o_proj.in_features == 16


def test_gqa_kept_groups_must_keep_equal_query_heads_and_nothing_changes_on_error():
    model = zoo.build("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError, match="same number of query heads"):
        prune_heads(model, 0, [0, 1, 2])
    with pytest.raises(PrunekitError, match="same number of query heads"):
        apply_plan(model, StructuredPlan(ffn={0: [1, 2]}, heads={1: [0, 2, 3]}))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not even the FFN changed


def test_tied_lm_head_stays_tied_after_hidden_pruning():
    for family, emb, head in (("gpt2", "transformer.wte", "lm_head"), ("llama", "model.embed_tokens", "lm_head")):
        model = prune_hidden(zoo.build(family), HIDDEN_KEEP)
        assert model.get_submodule(head).weight is model.get_submodule(emb).weight
        assert model.get_submodule(head).weight.shape == (zoo.VOCAB, 16)


def test_hidden_reference_uses_kept_dims_layernorm_for_layernorm_models_only():
    bert_ref = structured_masks(zoo.build("bert"), StructuredPlan(hidden=HIDDEN_KEEP))
    assert isinstance(bert_ref.bert.embeddings.LayerNorm, KeptDimsLayerNorm)
    llama_ref = structured_masks(zoo.build("llama"), StructuredPlan(hidden=HIDDEN_KEEP))
    assert not any(isinstance(m, KeptDimsLayerNorm) for m in llama_ref.modules())  # RMSNorm: parameters only


def test_single_step_functions_match_apply_plan():
    a = zoo.build("bert")
    prune_heads(a, 0, [1, 3])
    prune_ffn(a, 2, [4, 5, 6])
    prune_hidden(a, HIDDEN_KEEP)
    prune_layers(a, [0, 2])
    b = apply_plan(zoo.build("bert"), StructuredPlan(heads={0: [1, 3]}, ffn={2: [4, 5, 6]}, hidden=HIDDEN_KEEP,
                                                      layers=[0, 2]))
    assert torch.equal(zoo.logits(a), zoo.logits(b))


def _scores(model, layer_scores=None) -> GroupScores:
    """Deterministic scores: higher index = more important, so the kept set is predictable."""
    s = GroupScores(layers=layer_scores)
    for i in range(zoo.LAYERS):
        s.heads[i] = torch.arange(4.0) + i
        s.kv[i] = torch.arange(2.0) + i if model.config.model_type == "llama" else s.heads[i]
        s.ffn[i] = torch.arange(48.0) * (i + 1)
    s.hidden = torch.arange(32.0)
    return s


def test_local_plan_prunes_the_same_fraction_everywhere():
    model = zoo.build("bert")
    plan = plan_from_ratios(model, _scores(model), heads=0.5, ffn=0.25)
    assert plan.heads == {i: [2, 3] for i in range(3)}
    assert all(v == list(range(12, 48)) for v in plan.ffn.values())


def test_global_plan_gives_uneven_widths_and_the_requested_total():
    model = zoo.build("bert")
    plan = plan_from_ratios(model, _scores(model), heads=0.5, ffn=0.5, scope="global")
    assert sum(len(v) for v in plan.heads.values()) == 6
    assert [len(plan.heads[i]) for i in range(3)] == [1, 2, 3]  # later layers score higher
    widths = [len(plan.ffn[i]) for i in range(3)]
    assert sum(widths) == 72 and len(set(widths)) == 3
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert (zoo.logits(pruned) - zoo.logits(structured_masks(model, plan))).abs().max() <= TOL


def test_round_to_keeps_multiples():
    model = zoo.build("llama")
    plan = plan_from_ratios(model, _scores(model), heads=0, ffn=0.3, hidden=0.3, round_to=8, scope="global")
    assert all(len(v) % 8 == 0 for v in plan.ffn.values())
    assert len(plan.hidden) % 8 == 0


def test_layers_are_ranked_not_truncated():
    model = zoo.build("gpt2")
    plan = plan_from_ratios(model, _scores(model, torch.tensor([5.0, 1.0, 3.0])), heads=0, ffn=0, layers=1 / 3)
    assert plan.layers == [0, 2]  # the middle layer scored lowest, not the last one


def test_gqa_plans_keep_whole_groups_or_equal_heads_per_group():
    model = zoo.build("llama")
    scores = _scores(model)
    scores.heads = {i: torch.tensor([3.0, 0.0, 1.0, 2.0]) for i in range(3)}
    groups = plan_from_ratios(model, scores, heads=0.5, ffn=0)
    assert groups.heads == {i: [2, 3] for i in range(3)}  # kv group 1 scores higher
    heads = plan_from_ratios(model, scores, heads=0.5, ffn=0, gqa="heads")
    assert heads.heads == {i: [0, 3] for i in range(3)}  # the best query head of each group
    pruned = apply_plan(copy.deepcopy(model), heads)
    assert all(layer["kv_heads"] == 2 and layer["q_heads"] == 2 for layer in model_shapes(pruned)["layers"])


@pytest.mark.parametrize("kwargs, match", [
    ({"heads": 1.0}, "every attention head of layer 0"),
    ({"ffn": 1.0}, "every FFN neuron of layer 0"),
    ({"layers": 1.0}, "every one of the 3 layers"),
    ({"hidden": 1.0}, "whole hidden width"),
    ({"heads": 1.5}, r"in \[0, 1\]"),
    ({"scope": "row"}, "unknown scope"),
    ({"round_to": 0}, "round_to"),
    ({"gqa": "heads", "heads": 0.25}, "cannot be split evenly over its 2 key/value groups"),
    ({"gqa": "heads", "heads": 0.75}, "cannot be split evenly"),
])
def test_bad_ratios_are_clear_errors(kwargs, match):
    model = zoo.build("llama")
    args = {"heads": 0.0, "ffn": 0.0} | kwargs
    with pytest.raises(PrunekitError, match=match):
        plan_from_ratios(model, _scores(model, torch.arange(3.0)), **args)


def test_global_ranking_keeps_each_layers_best_head_and_fails_only_when_the_total_forbids():
    model = zoo.build("bert")
    scores = _scores(model, torch.tensor([0.0, 1.0, 2.0]))
    scores.heads[0] = scores.kv[0] = torch.tensor([-10.0, -9.0, -12.0, -11.0])  # rank below all others
    plan = plan_from_ratios(model, scores, heads=0.4, ffn=0, scope="global")
    assert plan.heads[0] == [1]  # layer 0 keeps its best head; the total removed is still round(0.4 · 12)
    assert sum(4 - len(v) for v in plan.heads.values()) == 5
    with pytest.raises(PrunekitError, match="every attention head"):
        plan_from_ratios(model, scores, heads=0.9, ffn=0, scope="global")  # 11 of 12 removed: a layer empties
    plan = plan_from_ratios(model, scores, heads=0.4, ffn=0, layers=1 / 3, scope="global")
    assert plan.layers == [1, 2] and 0 not in plan.heads


def test_plan_round_trips_through_json_types():
    plan = StructuredPlan(heads={0: [1]}, ffn={2: [3, 4]}, layers=[0, 2], hidden=[1, 2])
    assert StructuredPlan.from_dict(plan.to_dict()) == plan


def test_hidden_pruning_refuses_unknown_head_modules():
    model = zoo.build("bert")
    model.extra_head = torch.nn.Linear(zoo.HIDDEN, 5)
    with pytest.raises(PrunekitError, match="does not know module extra_head.weight"):
        prune_hidden(model, HIDDEN_KEEP)
    assert model.bert.embeddings.word_embeddings.weight.shape[1] == zoo.HIDDEN


def test_hidden_pruning_refuses_unknown_projections_inside_blocks():
    model = zoo.build("bert", is_decoder=True, add_cross_attention=True)
    with pytest.raises(PrunekitError, match="crossattention.self.query"):
        apply_plan(model, StructuredPlan(ffn={0: [1, 2]}, hidden=HIDDEN_KEEP))
    assert model.bert.encoder.layer[0].intermediate.dense.out_features == zoo.FFN  # nothing applied

"""Structured pruning of the decoder families beyond LLaMA (issue 22): each cut model computes what the
masked reference computes, saves and reloads to identical logits; families without a layout are refused."""

from __future__ import annotations

import copy

import _family_zoo as family_zoo  # tests/ is on pytest's pythonpath
import _structured_zoo as zoo
import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.io.shapes import save_pruned
from prunekit.prune import StructuredPlan, apply_plan, structured_masks

one_thread = zoo.one_thread  # autouse fixture
TOL = 1e-4

# 4 query heads in 2 kv groups: keep a whole group, one head per group, then the first group.
PLANS = {
    "heads": StructuredPlan(heads={0: [2, 3], 1: [0, 3], 2: [0, 1]}),
    "ffn": StructuredPlan(ffn={0: list(range(0, 48, 2)), 1: [5, 7, 11, 40], 2: list(range(30))}),
    "layers": StructuredPlan(layers=[0, 2]),
    "hidden": StructuredPlan(hidden=[0, 1, 2, 5, 8, 9, 13, 14, 17, 20, 21, 22, 26, 27, 29, 31]),
}
NO_HIDDEN = {"gemma", "gemma2", "gemma3_text"}  # the embedding scale follows config.hidden_size


@pytest.mark.parametrize("granularity", list(PLANS))
@pytest.mark.parametrize("family", zoo.DECODERS)
def test_decoder_pruned_equals_masked(family, granularity):
    model, plan = zoo.build(family), PLANS[granularity]
    if granularity == "hidden" and family in NO_HIDDEN:
        with pytest.raises(PrunekitError, match=r"hidden-width pruning is not supported for gemma models: .*sqrt"):
            apply_plan(copy.deepcopy(model), plan)
        return
    reference = structured_masks(model, plan)
    pruned = apply_plan(copy.deepcopy(model), plan)
    before, after, want = zoo.logits(model), zoo.logits(pruned), zoo.logits(reference)
    assert (after - want).abs().max() <= TOL
    assert (after - before).abs().max() > 1e-2
    assert zoo.n_params(pruned) < zoo.n_params(model)


@pytest.mark.parametrize("family", zoo.DECODERS)
def test_decoder_save_reload_gives_identical_logits(family, tmp_path):
    uneven = StructuredPlan(heads={0: [2, 3], 1: [0, 3]}, ffn={0: [1, 4, 9], 2: list(range(30))}, layers=[0, 1])
    for name, plan, vanilla in (("uneven", uneven, False),
                                ("uniform", StructuredPlan(ffn={i: list(range(24)) for i in range(3)}), True)):
        pruned = apply_plan(zoo.build(family), plan)
        manifest = save_pruned(pruned, None, tmp_path / name)
        assert manifest["vanilla_from_pretrained"] is vanilla
        assert torch.equal(zoo.logits(prunekit.load(tmp_path / name)), zoo.logits(pruned))
        if vanilla:  # the config alone expresses the result
            plain = type(pruned).from_pretrained(tmp_path / name).eval()
            assert torch.equal(zoo.logits(plain), zoo.logits(pruned))


@pytest.mark.parametrize("model_type, missing", [
    ("phi3", "fused qkv_proj and gate_up_proj"), ("gpt_neox", "fused query_key_value, interleaved per head"),
    ("falcon", "fused query_key_value"), ("opt", "fc1/fc2"), ("olmo2", "q/k norms that span the full width"),
])
def test_decoders_without_a_layout_are_refused_in_one_line(model_type, missing):
    model = family_zoo.build(model_type)
    with pytest.raises(PrunekitError, match=f"structured pruning of {model_type} models is not supported yet") as err:
        apply_plan(model, StructuredPlan(ffn={0: [0, 1]}))
    assert missing in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_lm_pipeline_prunes_heads_and_ffn_of_gemma_and_reloads(model_type, tiny_lm, tiny_text, tmp_path):
    """The LM loop (sequential calibration, reconstruction) runs through sliding-window, soft-capped blocks."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from prunekit.pipeline_lm import StructuredLM, prune_lm

    folder, out = tmp_path / model_type, tmp_path / "out"
    cfg = AutoConfig.for_model(model_type, vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                               num_key_value_heads=2, head_dim=8, intermediate_size=48, sliding_window=8,
                               max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(folder)
    report = prune_lm(str(folder), str(tiny_text), out, None, calib_samples=8, seq_len=32, eval_samples=4,
                      structured=StructuredLM(heads=0.5, ffn=0.5, latency=False))
    assert report["reload_check"]["max_abs_logit_diff"] <= 1e-4
    assert prunekit.load(out).model.layers[0].self_attn.q_proj.out_features == 4 * 8

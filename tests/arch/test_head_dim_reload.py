"""Structured LM pruning of families whose configs derive the head size (Qwen2, SmolLM3) saves and reloads.

Real Qwen2/Qwen2.5 checkpoints have no ``head_dim`` key: the head size is hidden_size / heads, so a
loader that builds the skeleton with one head must not let the rotary table follow that count.
"""

from __future__ import annotations

import pytest
import torch
from _threads import one_thread  # noqa: F401 - autouse fixture, shared
from transformers import AutoConfig, AutoModelForCausalLM

import prunekit
from prunekit.pipeline_lm import StructuredLM, prune_lm

pytest_plugins = ()




def _lm(folder, model_type: str, tokenizer) -> None:
    cfg = AutoConfig.for_model(model_type, vocab_size=64,  # room for the eos a qwen2 folder adds
                               hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=8, num_key_value_heads=2, intermediate_size=48,
                               max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                               tie_word_embeddings=True)
    if "head_dim" in cfg.to_dict():  # as real Qwen2 checkpoints: the head size comes from hidden / heads
        cfg.head_dim = None
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.parametrize("model_type", ["qwen2", "smollm3"])
def test_structured_heads_and_ffn_reload_without_head_dim(model_type, tiny_lm, tiny_text, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / model_type
    _lm(folder, model_type, AutoTokenizer.from_pretrained(tiny_lm))
    out = tmp_path / "out"
    report = prune_lm(str(folder), str(tiny_text), out, None, calib_samples=8, seq_len=32, eval_samples=4,
                      structured=StructuredLM(heads=0.5, ffn=0.5, latency=False))
    assert report["reload_check"]["max_abs_logit_diff"] <= 1e-4
    model = prunekit.load(out)
    assert model.model.layers[0].self_attn.q_proj.out_features == 4 * 8  # 4 of 8 heads of 8 kept
    ids = torch.randint(5, 30, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, prunekit.load(out)(input_ids=ids).logits)

"""Unstructured and one-shot pruning of every family users bring, with or without a table entry.

A tiny random-weight model per family (transformers 5 configs, hidden 32, 2 blocks): magnitude
unstructured 50 % over :func:`prunable_weights`, and Wanda / SparseGPT one-shot 50 % on random ids,
each reaching the target on the blocks' Linear weights; the pruned model still runs and saves
(:func:`prunekit.io.shapes.save_sparse`) and reloads (:func:`prunekit.load`) to identical logits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

import prunekit
from prunekit.arch import find_family, layer_stacks, prunable_modules, prunable_weights
from prunekit.arch.experts import FUSED, has_fused_experts, unfused_experts
from prunekit.io.shapes import save_sparse
from prunekit.prune.masks import MaskSet, compute_masks
from prunekit.prune.oneshot import OneShotSettings, prune_oneshot

VOCAB = 64
IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
LLAMA_LIKE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, max_position_embeddings=64)
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=130, num_labels=2)
MOE = dict(num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)

#: model_type -> (Auto class, config keywords)
ZOO: dict[str, tuple[type, dict]] = {
    "bert": (AutoModelForSequenceClassification, ENCODER),
    "roberta": (AutoModelForSequenceClassification, ENCODER),
    "deberta-v2": (AutoModelForSequenceClassification,
                   {**ENCODER, "relative_attention": True, "position_buckets": 8, "pos_att_type": ["p2c", "c2p"]}),
    "modernbert": (AutoModelForSequenceClassification,
                   {**ENCODER, **IDS, "cls_token_id": 1, "sep_token_id": 2, "global_attn_every_n_layers": 2,
                    "local_attention": 8}),
    "albert": (AutoModelForSequenceClassification, {**ENCODER, "embedding_size": 16}),
    "mpnet": (AutoModelForSequenceClassification, ENCODER),
    "gpt2": (AutoModelForCausalLM, dict(n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=1,
                                        eos_token_id=2)),
    "llama": (AutoModelForCausalLM, LLAMA_LIKE),
    "mistral": (AutoModelForCausalLM, LLAMA_LIKE),
    "qwen2": (AutoModelForCausalLM, LLAMA_LIKE),
    "qwen3": (AutoModelForCausalLM, {**LLAMA_LIKE, "head_dim": 8}),
    "gemma": (AutoModelForCausalLM, {**LLAMA_LIKE, "head_dim": 8}),
    "gemma2": (AutoModelForCausalLM, {**LLAMA_LIKE, "head_dim": 8, "sliding_window": 8}),
    "phi3": (AutoModelForCausalLM, LLAMA_LIKE),
    "opt": (AutoModelForCausalLM, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                       word_embed_proj_dim=32, max_position_embeddings=64)),
    "gpt_neox": (AutoModelForCausalLM, {**LLAMA_LIKE, "num_key_value_heads": 4}),
    "falcon": (AutoModelForCausalLM, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4)),
    "olmo2": (AutoModelForCausalLM, LLAMA_LIKE),
    "qwen2_moe": (AutoModelForCausalLM, {**LLAMA_LIKE, **MOE, "num_experts": 4}),
    "mixtral": (AutoModelForCausalLM, {**LLAMA_LIKE, "num_local_experts": 4, "num_experts_per_tok": 2}),
    "t5": (AutoModelForSeq2SeqLM, dict(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                                       decoder_start_token_id=0)),
    "bart": (AutoModelForSeq2SeqLM, dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                         decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                         max_position_embeddings=64, decoder_start_token_id=2)),
}


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(model_type: str) -> torch.nn.Module:
    auto, kwargs = ZOO[model_type]
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, **{**IDS, **kwargs})
    torch.manual_seed(0)
    model = auto.from_config(config)
    model.config.architectures = [type(model).__name__]  # as from_pretrained leaves it, so the folder reloads
    return model.eval()


def inputs(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": ids, "decoder_input_ids": ids} if model.config.is_encoder_decoder else {"input_ids": ids}


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(model, ids)).logits


def block_weights(model: torch.nn.Module, experts: bool = False) -> dict[str, torch.Tensor]:
    """The Linear weights inside the blocks (the default prunable set), and with ``experts`` the fused
    mixture-of-experts tensors one-shot pruning also covers, by name."""
    out = {n: m.weight for n, m in prunable_modules(model).items()}
    if experts:
        out.update({n: p for n, p in model.named_parameters() if n.endswith(FUSED) and p.dim() == 3})
    return out


def block_sparsity(model: torch.nn.Module, experts: bool = False) -> float:
    weights = block_weights(model, experts).values()
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _check_reload(model: torch.nn.Module, tmp_path: Path) -> None:
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))
    expected = logits(model, ids)
    assert torch.isfinite(expected).all()
    save_sparse(model, None, tmp_path / "saved")
    assert torch.equal(logits(prunekit.load(tmp_path / "saved"), ids), expected)


@pytest.mark.parametrize("model_type", list(ZOO))
def test_magnitude_unstructured_half(model_type, tmp_path):
    model = build(model_type)
    params = prunable_weights(model)
    MaskSet(params).update(compute_masks({n: p.abs() for n, p in params.items()}, 0.5))
    assert block_sparsity(model) == pytest.approx(0.5, abs=1e-3)
    _check_reload(model, tmp_path)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("model_type", list(ZOO))
def test_oneshot_half(model_type, method, tmp_path):
    model = build(model_type)
    windows = torch.randint(3, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
    result = prune_oneshot(model, windows, OneShotSettings(method=method, sparsity=0.5))
    # every block Linear of every stack, and each expert of a mixture (on the tokens routed to it)
    assert set(result.layer_sparsity) == set(block_weights(model, experts=True))
    assert block_sparsity(model, experts=True) == pytest.approx(0.5, abs=0.01)
    _check_reload(model, tmp_path)


def test_discovery_covers_both_stacks_of_an_encoder_decoder():
    model = build("t5")
    assert find_family(model.config) is None
    assert [name for name, _ in layer_stacks(model)] == ["encoder.block", "decoder.block"]
    names = list(prunable_modules(model))
    assert any(".EncDecAttention." in n for n in names) and any(n.startswith("encoder.") for n in names)


def test_routers_are_not_pruned_by_default():
    names = prunable_modules(build("qwen2_moe"))
    assert not any(n.endswith(("mlp.gate", "shared_expert_gate")) for n in names)
    assert any(n.endswith("shared_expert.down_proj") for n in names)


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe"])
def test_experts_as_linears_compute_what_the_fused_experts_do(model_type):
    model = build(model_type)
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(2))
    expected = logits(model, ids)
    with unfused_experts(model):
        assert not has_fused_experts(model)
        assert any(n.endswith("experts.down_proj.3") for n in prunable_modules(model))
        torch.testing.assert_close(logits(model, ids), expected)
    assert has_fused_experts(model)
    assert torch.equal(logits(model, ids), expected)

"""Tiny random-weight models of every family users bring (transformers 5 configs, hidden 32, 2 blocks),
with or without an entry in prunekit's architecture table; shared by the tests of :mod:`prunekit.arch`.
"""

from __future__ import annotations

import torch
from _threads import one_thread  # noqa: F401 - autouse fixture, shared
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

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
    "qwen3_moe": (AutoModelForCausalLM, {**LLAMA_LIKE, **MOE, "num_experts": 4, "head_dim": 8}),
    "smollm3": (AutoModelForCausalLM, LLAMA_LIKE),
    "gemma3_text": (AutoModelForCausalLM, {**LLAMA_LIKE, "head_dim": 8, "sliding_window": 8}),
    "t5": (AutoModelForSeq2SeqLM, dict(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                                       decoder_start_token_id=0)),
    "bart": (AutoModelForSeq2SeqLM, dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                         decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                         max_position_embeddings=64, decoder_start_token_id=2)),
    "marian": (AutoModelForSeq2SeqLM, dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                           max_position_embeddings=64, decoder_start_token_id=0)),
}




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

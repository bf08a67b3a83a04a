import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from prunekit.arch import family_for, prunable_modules, transformer_layers
from prunekit.errors import PrunekitError


def test_bert_default_prunable_is_encoder_linears_only(tiny_model):
    names = list(prunable_modules(tiny_model))
    assert len(names) == 2 * 6  # q, k, v, o, up, down per layer
    assert all(n.startswith("bert.encoder.layer.") for n in names)
    assert "classifier" not in " ".join(names) and "pooler" not in " ".join(names)


def test_include_and_exclude_regex(tiny_model):
    names = list(prunable_modules(tiny_model, include=r"intermediate|classifier"))
    assert "classifier" in names and len(names) == 3
    names = list(prunable_modules(tiny_model, exclude=r"attention"))
    assert len(names) == 4
    with pytest.raises(PrunekitError, match="regular expression"):
        prunable_modules(tiny_model, include="(")
    with pytest.raises(PrunekitError, match="no prunable"):
        prunable_modules(tiny_model, include="nothing-matches")


def test_decoder_families_found():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50, bos_token_id=0,
                                      eos_token_id=0))
    assert family_for(gpt2).name == "gpt2"
    assert transformer_layers(gpt2)[0] == "transformer.h"
    assert len(prunable_modules(gpt2)) == 8
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=50))
    assert family_for(llama).name == "llama"
    assert len(prunable_modules(llama)) == 14  # q k v o gate up down


def test_unknown_architecture_names_what_is_missing():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "odd"})()
            self.lin = nn.Linear(2, 2)

    with pytest.raises(PrunekitError, match=r"odd: no repeated block list .* pass --prunable REGEX"):
        prunable_modules(Odd())
    assert list(prunable_modules(Odd(), include="lin")) == ["lin"]
    with pytest.raises(PrunekitError, match="structured pruning .* needs an entry for model_type 'odd'"):
        family_for(Odd())

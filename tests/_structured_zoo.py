"""Tiny, randomly initialised models of every family structured pruning supports (shared by its tests).

Weights are redrawn larger than Hugging Face's init (std 0.02) so that removing a group visibly
changes the output: an equality test between two near-constant outputs would prove nothing.
Test files load it by path (the test folders are not packages) and import the ``one_thread`` fixture.
"""

from __future__ import annotations

import torch
from _threads import one_thread  # noqa: F401 - autouse fixture, shared
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
)

VOCAB, HIDDEN, LAYERS, HEADS, FFN = 60, 32, 3, 4, 48
FAMILIES = ("bert", "distilbert", "roberta", "electra", "gpt2", "llama")
# encoders with their own attention/FFN layout (issue 22); ALBERT's three blocks are reused by each of its passes
ENCODERS = ("deberta-v2", "modernbert", "albert", "mpnet")
FAMILIES += ENCODERS
SHARED_LAYERS = ("albert",)  # layer removal is refused

ENCODER = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
               intermediate_size=FFN, max_position_embeddings=40, num_labels=3)
ENCODER_EXTRA = {
    # DeBERTa-v2 with disentangled attention (c2p + p2c through pos_key_proj/pos_query_proj) and v3's
    # normalised relative embeddings
    "deberta-v2": dict(relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"],
                       norm_rel_ebd="layer_norm", type_vocab_size=2),
    # layers 0 and 2 global, layer 1 local with a window shorter than the inputs
    "modernbert": dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
                       global_attn_every_n_layers=2, local_attention=4),
    "albert": dict(embedding_size=16, inner_group_num=LAYERS, num_hidden_groups=1),
    "mpnet": dict(),
}


# --- decoder families beyond LLaMA's (issue 22): LLaMA's tiny shapes, head_dim 8 where the config takes it ---
DECODERS = ("mistral", "qwen2", "qwen3", "smollm3", "gemma", "gemma2", "gemma3_text")
_DECODER_EXTRA = {"qwen3": {"head_dim": 8}, "gemma": {"head_dim": 8}, "mistral": {"head_dim": 8},
                  "gemma2": {"head_dim": 8, "sliding_window": 4}, "gemma3_text": {"head_dim": 8, "sliding_window": 4}}


def _decoder(model_type: str, overrides: dict) -> torch.nn.Module:
    """A tiny causal LM of one of :data:`DECODERS` (4 query heads sharing 2 kv heads)."""
    cfg = AutoConfig.for_model(model_type, vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                               num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=FFN,
                               bos_token_id=0, eos_token_id=0, pad_token_id=0, **_DECODER_EXTRA.get(model_type, {}))
    model = AutoModelForCausalLM.from_config(_apply(cfg, overrides))
    model.config.architectures = [type(model).__name__]  # as from_pretrained leaves it, so the folder reloads
    return model


def build(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny model of family ``name`` in eval mode (LLaMA: 4 query heads sharing 2 kv heads, tied head;
    ELECTRA: embedding_size 16 with a projection into the hidden width)."""
    torch.manual_seed(seed)
    if name == "bert":
        cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         intermediate_size=FFN, max_position_embeddings=40, num_labels=3)
        model = BertForSequenceClassification(_apply(cfg, overrides))
    elif name == "distilbert":
        cfg = DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                               max_position_embeddings=40, num_labels=3)
        model = DistilBertForSequenceClassification(_apply(cfg, overrides))
    elif name == "roberta":
        cfg = RobertaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            intermediate_size=FFN, max_position_embeddings=40, num_labels=3)
        model = RobertaForSequenceClassification(_apply(cfg, overrides))
    elif name == "electra":  # embeddings of 16 projected into the hidden width of 32
        cfg = ElectraConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=40, num_labels=3)
        model = ElectraForSequenceClassification(_apply(cfg, overrides))
    elif name == "gpt2":
        cfg = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, n_positions=40,
                         bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(_apply(cfg, overrides))
    elif name in DECODERS:
        model = _decoder(name, overrides)
    elif name == "llama":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                          num_key_value_heads=2, intermediate_size=FFN, tie_word_embeddings=True,
                          bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = LlamaForCausalLM(_apply(cfg, overrides))
    elif name in ENCODERS:
        cfg = AutoConfig.for_model(name, **{**ENCODER, **ENCODER_EXTRA[name]})
        model = AutoModelForSequenceClassification.from_config(_apply(cfg, overrides))
    else:
        raise ValueError(name)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1 and "norm" in pname.lower() and pname.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model.eval()


def _apply(cfg, overrides: dict):
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    """Two sequences of 7 tokens, the second padded after 5."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def labelled(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """:func:`inputs` with labels: classes for classifiers, the tokens themselves for LMs."""
    batch = inputs(seed)
    batch["labels"] = batch["input_ids"].clone() if name in ("gpt2", "llama", *DECODERS) else torch.tensor([0, 2])
    return batch


@torch.no_grad()
def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    batch = {k: v for k, v in (batch or inputs()).items() if k != "labels"}
    return model(**batch).logits


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

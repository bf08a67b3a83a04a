"""The module attributes that hold a model's widths, across the families prunekit knows.

transformers modules cache their head counts and widths as plain attributes (BERT's
``attention.self.num_attention_heads``, GPT-2's ``split_size``, LLaMA's ``num_key_value_groups``...) and
compute with them, so whoever changes a width must rewrite them: structured pruning after surgery
(:mod:`prunekit.prune.structured`) and the loader that rebuilds a pruned model (:mod:`prunekit.io.shapes`).
The names are listed here once; a family storing a width under a new name adds it here.
"""

from __future__ import annotations

from torch import nn

#: the number of query heads, on the attention module
Q_HEAD_COUNT = ("num_attention_heads", "num_heads", "n_heads", "n_head")
#: the total query width (query heads x head size), on the attention module
Q_WIDTH = ("all_head_size", "split_size")
#: the number of key/value heads (grouped-query attention), on the attention module
KV_HEAD_COUNT = ("num_key_value_heads",)
#: query heads per key/value head, on the attention module
KV_GROUPS = ("num_key_value_groups",)
#: the size of one head, on the attention module (each family names its own as ``Family.head_dim_attr``)
HEAD_SIZE = ("head_dim", "attention_head_size")
#: the attention score scaling, on the attention module
SCALING = "scaling"
#: the FFN width, on the module holding the FFN projections
FFN_WIDTH = ("intermediate_size",)
#: the model width (residual stream), on any module
HIDDEN_WIDTH = ("hidden_size", "embed_dim", "dim")
#: what an attention module computes with beyond its weight shapes: compared to decide whether a
#: vanilla config rebuilds a pruned model exactly
LAYOUT = (SCALING, *HEAD_SIZE, *KV_GROUPS, "split_size")


def set_int_attrs(module: nn.Module, names: tuple[str, ...], value: int) -> None:
    """Set each of ``names`` that ``module`` holds as an int (a bool or a missing name is left alone)."""
    for name in names:
        if isinstance(getattr(module, name, None), int) and not isinstance(getattr(module, name), bool):
            setattr(module, name, value)


def set_head_counts(attn: nn.Module, q_heads: int, kv_heads: int, head_dim: int) -> None:
    """Write an attention module's head bookkeeping for ``q_heads`` query and ``kv_heads`` key/value heads."""
    set_int_attrs(attn, Q_HEAD_COUNT, q_heads)
    set_int_attrs(attn, Q_WIDTH, q_heads * head_dim)
    set_int_attrs(attn, KV_HEAD_COUNT, kv_heads)
    set_int_attrs(attn, KV_GROUPS, q_heads // kv_heads)

"""Model families as data: where the layers, attention, FFN, norms, embeddings and head live.

Everything else in prunekit asks this table instead of testing ``isinstance(BertLayer)``, so adding a
family is one entry in :mod:`prunekit.arch.families`. A family without an entry still gets unstructured
and one-shot pruning: :mod:`prunekit.arch.discover` finds its blocks from the model itself.
"""

from prunekit.arch.families import (
    FAMILIES,
    Family,
    attention_linears,
    family_for,
    family_for_config,
    find_family,
    layer_stacks,
    linear_groups,
    prunable_modules,
    prunable_weights,
    selected_stack,
    transformer_layers,
)
from prunekit.arch.textnets import (
    TEXT_FAMILIES,
    TEXT_MODEL_TYPES,
    TextFamily,
    TextLayout,
    is_text_model,
    rnn_directions,
    rnn_output_width,
    text_layout,
)

__all__ = [
    "FAMILIES",
    "TEXT_FAMILIES",
    "TEXT_MODEL_TYPES",
    "Family",
    "attention_linears",
    "TextFamily",
    "TextLayout",
    "family_for",
    "family_for_config",
    "find_family",
    "is_text_model",
    "layer_stacks",
    "linear_groups",
    "prunable_modules",
    "prunable_weights",
    "rnn_directions",
    "rnn_output_width",
    "selected_stack",
    "text_layout",
    "transformer_layers",
]

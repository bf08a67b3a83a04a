"""Model families as data: where the layers, attention, FFN, norms, embeddings and head live.

Everything else in prunekit asks this table instead of testing ``isinstance(BertLayer)``, so adding a
family is one entry in :mod:`prunekit.arch.families`.
"""

from prunekit.arch.families import (
    FAMILIES,
    Family,
    family_for,
    family_for_config,
    prunable_modules,
    prunable_weights,
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
    "TextFamily",
    "TextLayout",
    "family_for",
    "family_for_config",
    "is_text_model",
    "prunable_modules",
    "prunable_weights",
    "rnn_directions",
    "rnn_output_width",
    "text_layout",
    "transformer_layers",
]

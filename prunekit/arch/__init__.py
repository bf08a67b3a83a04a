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
    transformer_layers,
)

__all__ = ["FAMILIES", "Family", "family_for", "family_for_config", "prunable_modules", "transformer_layers"]

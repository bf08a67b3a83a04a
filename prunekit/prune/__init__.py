"""Removing weights: masks (unstructured) and physical surgery (structured), side by side."""

import sys
import types
from typing import Any

from prunekit.arch.groups import GroupSet, ffn_groups, head_groups, hidden_groups
from prunekit.prune.masks import (
    SCOPES,
    MaskSet,
    check_sparsity,
    compute_masks,
    keep_n_of_m,
    keep_per_row,
    parse_pattern,
)
from prunekit.prune.structured.masks import structured_masks
from prunekit.prune.structured.plan import StructuredPlan, apply_plan
from prunekit.prune.structured.ranking import GroupScores, plan_from_ratios
from prunekit.prune.structured.remove import prune_ffn, prune_heads, prune_hidden, prune_layers
from prunekit.prune.structured.shapes import model_shapes
from prunekit.prune.surgery import (
    keep_conv_in_channels,
    keep_conv_out_channels,
    keep_embedding_dims,
    keep_in_features,
    keep_norm,
    keep_out_features,
    keep_rnn_inputs,
    keep_rnn_units,
    remove_layers,
)
from prunekit.prune.textnets import (
    TextGroup,
    TextPlan,
    apply_text_plan,
    check_text_ratios,
    text_groups,
    text_masks,
    text_plan_from_ratios,
    text_shapes,
)
from prunekit.prune.vocab import always_kept_ids, check_vocab_mapping, corpus_token_ids, prune_vocab

__all__ = [
    "SCOPES",
    "GroupScores",
    "GroupSet",
    "MaskSet",
    "StructuredPlan",
    "TextGroup",
    "TextPlan",
    "always_kept_ids",
    "apply_plan",
    "apply_text_plan",
    "check_sparsity",
    "check_text_ratios",
    "check_vocab_mapping",
    "compute_masks",
    "corpus_token_ids",
    "ffn_groups",
    "head_groups",
    "hidden_groups",
    "keep_conv_in_channels",
    "keep_conv_out_channels",
    "keep_embedding_dims",
    "keep_in_features",
    "keep_n_of_m",
    "keep_norm",
    "keep_out_features",
    "keep_per_row",
    "keep_rnn_inputs",
    "keep_rnn_units",
    "model_shapes",
    "parse_pattern",
    "plan_from_ratios",
    "prune_ffn",
    "prune_heads",
    "prune_hidden",
    "prune_layers",
    "prune_vocab",
    "remove_layers",
    "structured_masks",
    "text_groups",
    "text_masks",
    "text_plan_from_ratios",
    "text_shapes",
]


class _CallablePackage(types.ModuleType):
    """`prunekit.prune(...)` is the public API function, but importing this subpackage rebinds the name
    `prunekit.prune` to the package; calling the package runs the function, so both stay true."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from prunekit.pipeline import prune

        return prune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

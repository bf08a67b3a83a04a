"""Removing weights: masks (unstructured) and physical surgery (structured), side by side."""

from prunekit.prune.masks import SCOPES, MaskSet, check_sparsity, compute_masks
from prunekit.prune.structured import (
    GroupScores,
    GroupSet,
    StructuredPlan,
    apply_plan,
    ffn_groups,
    head_groups,
    hidden_groups,
    model_shapes,
    plan_from_ratios,
    prune_ffn,
    prune_heads,
    prune_hidden,
    prune_layers,
    structured_masks,
)
from prunekit.prune.surgery import (
    keep_embedding_dims,
    keep_in_features,
    keep_norm,
    keep_out_features,
    remove_layers,
)
from prunekit.prune.vocab import always_kept_ids, check_vocab_mapping, corpus_token_ids, prune_vocab

__all__ = [
    "SCOPES",
    "GroupScores",
    "GroupSet",
    "MaskSet",
    "StructuredPlan",
    "always_kept_ids",
    "apply_plan",
    "check_sparsity",
    "check_vocab_mapping",
    "compute_masks",
    "corpus_token_ids",
    "ffn_groups",
    "head_groups",
    "hidden_groups",
    "keep_embedding_dims",
    "keep_in_features",
    "keep_norm",
    "keep_out_features",
    "model_shapes",
    "plan_from_ratios",
    "prune_ffn",
    "prune_heads",
    "prune_hidden",
    "prune_layers",
    "prune_vocab",
    "remove_layers",
    "structured_masks",
]

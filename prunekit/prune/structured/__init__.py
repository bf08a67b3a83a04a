"""Structured pruning: which groups exist, which to keep (a plan), and removing the rest for real.

Four granularities, all located through the architecture table (:mod:`prunekit.arch.families`):

- **heads**: a query head's q rows and o input columns (plus its k/v rows in multi-head attention).
  With grouped-query attention (LLaMA/Qwen/Mistral) a key/value head is shared by a *group* of query
  heads, so a plan names the query heads it keeps; a kv head goes when all of its query heads go,
  and every kept group must keep the same number of query heads (the attention kernels repeat each
  kv head ``num_key_value_groups`` times).
- **ffn**: one intermediate neuron: its up (and gate) row and its down column.
- **layers**: whole blocks, renumbered afterwards.
- **hidden**: one model dimension, removed consistently from the embeddings, every residual norm,
  every projection reading or writing the residual stream, and the head (pooler/classifier/LM head;
  a tied LM head stays tied).

Per-layer widths may end up uneven; ``config`` then holds the largest width and
:func:`model_shapes` the true ones (saved beside the weights by :mod:`prunekit.io.shapes`).

One module per concern: :mod:`~.sites` (where things are), :mod:`~.groups` (which slices belong together),
:mod:`~.remove` (surgery with the model's bookkeeping), :mod:`~.shapes` (true widths, config sync),
:mod:`~.plan` (what to keep, applied), :mod:`~.ranking` (scores and ratios to a plan) and :mod:`~.masks`
(the same-shape masked reference). Everything public is re-exported here.
"""

from prunekit.arch.groups import GroupSet, HeadGroups, Part, ffn_groups, head_groups, hidden_groups
from prunekit.arch.sites import (
    AttnSite,
    FfnSite,
    HiddenSites,
    attn_site,
    ffn_site,
    find_module,
    hidden_sites,
    num_layers,
)
from prunekit.prune.structured.masks import KeptDimsLayerNorm, skip_layer, structured_masks
from prunekit.prune.structured.plan import StructuredPlan, apply_plan
from prunekit.prune.structured.ranking import (
    GQA_MODES,
    SCOPES,
    GroupScores,
    plan_from_layer_ratios,
    plan_from_ratios,
    removed_ratios,
)
from prunekit.prune.structured.remove import prune_ffn, prune_heads, prune_hidden, prune_layers
from prunekit.prune.structured.shapes import is_uniform, model_shapes, sync_config

__all__ = [
    "GQA_MODES",
    "SCOPES",
    "AttnSite",
    "FfnSite",
    "GroupScores",
    "GroupSet",
    "HeadGroups",
    "HiddenSites",
    "KeptDimsLayerNorm",
    "Part",
    "StructuredPlan",
    "apply_plan",
    "attn_site",
    "ffn_groups",
    "ffn_site",
    "find_module",
    "head_groups",
    "hidden_groups",
    "hidden_sites",
    "is_uniform",
    "model_shapes",
    "num_layers",
    "plan_from_layer_ratios",
    "plan_from_ratios",
    "prune_ffn",
    "prune_heads",
    "prune_hidden",
    "prune_layers",
    "removed_ratios",
    "skip_layer",
    "structured_masks",
    "sync_config",
]

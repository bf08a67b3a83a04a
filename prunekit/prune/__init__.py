"""Removing weights: masks (unstructured) today; surgery (structured) lives beside them."""

from prunekit.prune.masks import SCOPES, MaskSet, check_sparsity, compute_masks

__all__ = ["SCOPES", "MaskSet", "check_sparsity", "compute_masks"]

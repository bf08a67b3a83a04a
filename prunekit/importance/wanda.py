"""Wanda (Sun et al. 2023): |W_ij| · ‖X_j‖₂ — a weight matters as much as the inputs it multiplies.

Calibration supplies ``input_sq_norms`` (Σ over tokens of x_j², per input column j); comparing the
scores within each output row (not across the whole matrix) is what makes Wanda work on LLMs.
"""

from __future__ import annotations

from torch import Tensor


def wanda_scores(weight: Tensor, input_sq_norms: Tensor) -> Tensor:
    """Scores of an (out, in) weight given Σx² per input column (shape (in,))."""
    return weight.detach().abs().float() * input_sq_norms.float().clamp_min(0).sqrt().unsqueeze(0)


def outlier_ratio(scores: list[Tensor], multiple: float = 5.0) -> float:
    """Share of scores above ``multiple`` × their mean: OWL's (Yin et al. 2024) layer outlier measure."""
    import torch

    flat = torch.cat([s.flatten() for s in scores])
    return float((flat > multiple * flat.mean()).float().mean())

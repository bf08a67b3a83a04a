"""Wanda (Sun et al. 2023): |W_ij| · ‖X_j‖₂ — a weight matters as much as the inputs it multiplies.

Calibration supplies ``input_sq_norms`` (Σ over tokens of x_j², per input column j); comparing the
scores within each output row (not across the whole matrix) is what makes Wanda work on LLMs.
"""

from __future__ import annotations

from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.importance.base import Importance, InputStats
from prunekit.importance.registry import ONESHOT, WEIGHTS


def wanda_scores(weight: Tensor, input_sq_norms: Tensor) -> Tensor:
    """Scores of an (out, in) weight given Σx² per input column (shape (in,))."""
    return weight.detach().abs().float() * input_sq_norms.float().clamp_min(0).sqrt().unsqueeze(0)


def outlier_ratio(scores: list[Tensor], multiple: float = 5.0) -> float:
    """Share of scores above ``multiple`` × their mean: OWL's (Yin et al. 2024) layer outlier measure."""
    import torch

    flat = torch.cat([s.flatten() for s in scores])
    return float((flat > multiple * flat.mean()).float().mean())


class Wanda(Importance):
    """Wanda for any model with Linear layers (classifiers included): forward passes over calibration
    batches fill Σx² per input column of each pruned weight (:meth:`observe`, called by
    :func:`prunekit.train.calibrate`); a fresh estimate per pruning step, as weights change in between.
    Compare scores within output rows (``--scope row``, the default for this method)."""

    name = "wanda"
    help = "|W|·‖X‖ from calibration inputs, compared within output rows"
    applies = frozenset({WEIGHTS, ONESHOT})
    uses_activations = True
    scope = "row"

    def __init__(self) -> None:
        self._sq: dict[str, Tensor] = {}

    def check(self, model: nn.Module, params: dict[str, nn.Parameter]) -> None:
        self.observed(model, params)

    def observed(self, model: nn.Module, params: dict[str, nn.Parameter]) -> dict[str, nn.Module]:
        """The Linear whose inputs score each weight (``params`` are keyed by module or parameter name)."""
        out = {}
        for n, p in params.items():
            owner = next((m for m in (_module(model, n), _module(model, n.rpartition(".")[0]))
                          if isinstance(m, nn.Linear) and m.weight is p), None)
            if owner is None:
                raise PrunekitError(f"--method wanda scores Linear weights from their inputs; {n} is not one: "
                                    "restrict --prunable to Linear layers")
            out[n] = owner
        return out

    def observe(self, name: str, x: Tensor, token_mask: Tensor | None = None) -> None:
        """Fold in the inputs ``x`` (..., in) of the weight ``name``; ``token_mask`` (...,) drops padding."""
        x = x.detach().float()
        if token_mask is not None and token_mask.shape == x.shape[:-1]:
            x = x * token_mask.to(x.dtype).unsqueeze(-1)
        term = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
        self._sq[name] = self._sq[name] + term if name in self._sq else term

    def reset(self) -> None:
        self._sq = {}

    def state(self) -> dict[str, Tensor]:
        return self._sq

    def scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        if not self._sq:
            raise RuntimeError("wanda importance has seen no calibration activations yet")
        out = {}
        for n, p in params.items():
            if n not in self._sq or p.dim() != 2:
                raise PrunekitError(f"wanda scores Linear weights from their inputs; {n} is not one (shape "
                                    f"{tuple(p.shape)}): restrict --prunable to Linear layers")
            out[n] = wanda_scores(p, self._sq[n].to(p.device))
        return out

    def layer_scores(self, rows: Tensor, stats: InputStats | None) -> Tensor:
        if stats is None:
            raise PrunekitError("wanda scores a Linear from its calibration inputs: it needs their statistics")
        return wanda_scores(rows, stats.sq_norms)


def _module(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None

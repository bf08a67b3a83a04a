"""The contract every criterion follows: give a score per weight; higher means keep.

A criterion never knows how a weight is removed (masks or surgery); it only ranks.
"""

from __future__ import annotations

from torch import Tensor, nn


class Importance:
    """Base criterion. Weight-only criteria override :meth:`scores`; gradient-based ones also
    :meth:`accumulate`, which the training/calibration loop calls after every backward pass."""

    name: str = "base"
    #: needs backward passes (calibration batches or fine-tuning steps) before it can score
    uses_gradients: bool = False
    #: needs forward passes over calibration batches (it :meth:`observe`\ s the inputs of each weight)
    uses_activations: bool = False
    #: can only learn its scores during fine-tuning (so it needs the gradual schedule)
    needs_training: bool = False
    #: forget the accumulated statistics after each pruning step (Taylor: fresh estimate per step)
    reset_after_prune: bool = True

    def accumulate(self, params: dict[str, nn.Parameter]) -> None:  # noqa: B027 - optional hook
        """Fold in the current gradients of ``params`` (called after ``backward``)."""

    def check(self, model: nn.Module, params: dict[str, nn.Parameter]) -> None:  # noqa: B027 - optional hook
        """Refuse weights this criterion cannot score, before any work is done."""

    def observed(self, model: nn.Module, params: dict[str, nn.Parameter]) -> dict[str, nn.Module]:
        """Activation criteria: the module whose inputs :meth:`observe` should see, per weight."""
        return {}

    def observe(self, name: str, x: Tensor, token_mask: Tensor | None = None) -> None:  # noqa: B027
        """Fold in the inputs ``x`` of weight ``name`` (activation criteria only)."""

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget accumulated statistics."""

    def scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        raise NotImplementedError

    def state(self) -> dict[str, Tensor]:
        """Accumulated statistics, so several processes can be reduced to one ranking."""
        return {}


class AccumulatingImportance(Importance):
    """Keeps a running per-weight sum built from ``(weight, grad)`` pairs."""

    uses_gradients = True

    def __init__(self) -> None:
        self._acc: dict[str, Tensor] = {}
        self.batches = 0

    def _term(self, weight: Tensor, grad: Tensor) -> Tensor:
        raise NotImplementedError

    def accumulate(self, params: dict[str, nn.Parameter]) -> None:
        for name, p in params.items():
            if p.grad is None:
                continue
            term = self._term(p.detach(), p.grad.detach()).float()
            if name in self._acc:
                self._acc[name].add_(term)
            else:
                self._acc[name] = term.clone()
        self.batches += 1

    def reset(self) -> None:
        self._acc = {}
        self.batches = 0

    def state(self) -> dict[str, Tensor]:
        return self._acc

    def scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        if not self._acc:
            raise RuntimeError(f"{self.name} importance has seen no gradients yet")
        return {n: self._acc[n] for n in params}

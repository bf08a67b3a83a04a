"""The contract every criterion follows: give a score per weight; higher means keep.

A criterion never knows how a weight is removed (masks or surgery); it only ranks. One class serves
every place it ``applies`` to (see :mod:`prunekit.importance.registry`): single weights
(:meth:`Importance.scores`), groups (a sum of :meth:`Importance.elementwise` over each group's slices,
or a criterion's own :meth:`Importance.score_groups`) and the one-shot LM engine
(:meth:`Importance.layer_scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from prunekit.arch.groups import TextGroup
from prunekit.errors import PrunekitError
from prunekit.importance.registry import WEIGHTS

#: what criteria that learn from data (gradients, activations) see: model inputs, by name
Batch = Mapping[str, Tensor]
#: the loss a gradient criterion backpropagates: ``loss_fn(model, batch)``
LossFn = Callable[[nn.Module, Batch], Tensor]


@dataclass
class GroupScores:
    """Importance per group (higher = keep), as computed by :mod:`prunekit.importance.groups`."""

    heads: dict[int, Tensor] = field(default_factory=dict)  # layer -> one score per query head
    kv: dict[int, Tensor] = field(default_factory=dict)  # layer -> one per kv head (with its query heads)
    ffn: dict[int, Tensor] = field(default_factory=dict)  # layer -> one per neuron
    hidden: Tensor | None = None  # one per model dimension
    layers: Tensor | None = None  # one per layer
    units: dict[str, Tensor] = field(default_factory=dict)  # text models: group name -> one per unit/filter/dim


@dataclass
class InputStats:
    """Running statistics of one Linear's inputs over the calibration tokens.

    ``sq_norms`` (Σ x_j²) is all Wanda needs; ``hessian`` (2/n · XᵀX) is SparseGPT's H, kept only
    when asked because it costs in² memory.
    """

    width: int
    hessian_wanted: bool = False
    tokens: int = 0
    sq_norms: Tensor | None = None
    xtx: Tensor | None = None
    xtd: Tensor | None = None  # Xᵀ X_dense: the same tokens' inputs in the unpruned model (dense targets)

    def add(self, x: Tensor, dense: Tensor | None = None) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if self.sq_norms is None:
            self.sq_norms = torch.zeros(self.width, device=x.device)
        self.sq_norms += (x * x).sum(0)
        if self.hessian_wanted:
            if self.xtx is None:
                self.xtx = torch.zeros(self.width, self.width, device=x.device)
            self.xtx.addmm_(x.t(), x)
        if dense is not None:
            d = dense.detach().reshape(-1, dense.shape[-1]).float().to(x.device)
            if self.xtd is None:
                self.xtd = torch.zeros(self.width, self.width, device=x.device)
            self.xtd.addmm_(x.t(), d)
        self.tokens += x.shape[0]

    @property
    def hessian(self) -> Tensor:
        if self.xtx is None:
            raise PrunekitError("internal: Hessian requested but not collected")
        return self.xtx * (2.0 / max(self.tokens, 1))


class Importance:
    """Base criterion. Weight-only criteria override :meth:`scores`; gradient-based ones also
    :meth:`accumulate`, which the training/calibration loop calls after every backward pass."""

    name: str = "base"
    #: one line for the CLI's help and :func:`prunekit.importance.registry.describe`
    help: ClassVar[str] = ""
    #: where it may be used: :data:`~prunekit.importance.registry.PLACES` keys
    applies: ClassVar[frozenset[str]] = frozenset({WEIGHTS})
    #: needs backward passes (calibration batches or fine-tuning steps) before it can score
    uses_gradients: bool = False
    #: needs forward passes over calibration batches (it :meth:`observe`\ s the inputs of each weight)
    uses_activations: bool = False
    #: can only learn its scores during fine-tuning (so it needs the gradual schedule)
    needs_training: bool = False
    #: forget the accumulated statistics after each pruning step (Taylor: fresh estimate per step)
    reset_after_prune: bool = True
    #: "row": its scores only compare within an output row (Wanda: each row's inputs differ), so the
    #: one-shot engine ranks per row; None: across the whole weight
    scope: ClassVar[str | None] = None

    @classmethod
    def build(cls, seed: int = 0) -> Importance:
        """A fresh instance; ``seed`` is for criteria that draw at random."""
        return cls()

    @classmethod
    def describe(cls) -> str:
        """Its help and what it needs, in one line."""
        needs = ("fine-tuning" if cls.needs_training else "gradients" if cls.uses_gradients
                 else "calibration batches" if cls.uses_activations else "weights")
        return f"{cls.help} (needs: {needs})"

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

    # -- groups: what prunekit.importance.groups asks ------------------------------------------------

    def elementwise(self, name: str, p: Tensor, state: Mapping[str, Tensor] | None) -> Tensor | None:
        """The per-weight score a group sums over its slices, for parameter ``name``; None leaves it out.

        Weight-only criteria score the weight itself; gradient criteria read ``state`` (per-weight sums
        keyed by parameter name, or by module name for a module's weight), which group scoring fills
        from calibration batches when the caller has none.
        """
        if not self.uses_gradients:
            return self.scores({name: p})[name]
        if state is None:
            raise PrunekitError(f"{self.name} group scores need per-weight scores or calibration batches")
        return state.get(name, state.get(name.removesuffix(".weight")) if name.endswith(".weight") else None)

    def reduce(self, total: Tensor) -> Tensor:
        """What a group's sum of :meth:`elementwise` becomes (l2: its square root)."""
        return total

    def draw(self, tag: str, size: int) -> Tensor | None:
        """Weight-free criteria (random): ``size`` scores for the groups called ``tag``; None: score weights."""
        return None

    def score_groups(self, model: nn.Module, batches: Sequence[Batch] | None, hidden: bool) -> GroupScores | None:
        """A transformer's group scores computed by the criterion itself (activation); None: sum weights."""
        return None

    def score_units(self, model: nn.Module, groups: list[TextGroup],
                    batches: Sequence[Batch] | None) -> dict[str, Tensor] | None:
        """A recurrent/conv text model's unit scores computed by the criterion itself; None: sum weights."""
        return None

    def rank_layers(self, model: nn.Module, *, batches: Sequence[Batch] | None, scores: GroupScores | None,
                    loss_fn: LossFn | None, remove: int | None) -> Tensor:
        """Layer rankings (``applies`` layers): one score per layer, higher = keep; ``scores`` are the
        model's group scores, ``remove`` how many layers will go (a greedy ranking may stop there)."""
        raise PrunekitError(f"{self.name} does not rank layers")

    # -- one-shot LM engine (prunekit.prune.oneshot) --------------------------------------------------

    def layer_scores(self, rows: Tensor, stats: InputStats | None) -> Tensor:
        """Scores of one Linear's (out, in) weight from its calibration statistics (None when the
        criterion uses no activations): by default the criterion's own per-weight scores."""
        return self.scores({"weight": rows})["weight"]


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

"""Solvers rewrite the weights a pruning step keeps; criteria (:mod:`prunekit.importance`) only rank.

After Torch-Pruning's ``Importance`` / ``Pruner`` split: a criterion says which weights matter, a
solver makes the kept ones compensate for the removed ones, from calibration statistics (H = XᵀX of a
layer's inputs). One registry, :data:`SOLVERS`:

- ``sparsegpt`` picks the mask itself, column block by column block, and updates the rest of each row
  with the OBS rule (:mod:`prunekit.prune.sparsegpt`): a ``--method`` of its own;
- ``refit`` keeps a given mask and solves each row's kept weights by least squares
  (:func:`prunekit.prune.reconstruct.refit_kept`): runs after a criterion's mask or after SparseGPT;
- ``reconstruct`` (structured) refits the output projections' kept columns once heads and neurons are
  removed (:func:`prunekit.prune.reconstruct.reconstruct`).

The one-shot engine (:func:`prunekit.prune.oneshot.prune_oneshot`) dispatches through this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.importance.registry import Names, Registry
from prunekit.prune.calibration import CALIB_BATCH, InputStats
from prunekit.prune.reconstruct import reconstruct, refit_kept
from prunekit.prune.sparsegpt import sparsegpt_prune

if TYPE_CHECKING:
    from prunekit.prune.structured import StructuredPlan


class SolverSettings(Protocol):
    """The one-shot settings a solver reads when it is built (:class:`~prunekit.prune.oneshot.OneShotSettings`
    has them): named here so the solvers sit below the engine that runs them."""

    damp: float
    block_size: int
    refit_damp: float
    refit_iters: int


@dataclass
class LayerJob:
    """One Linear's problem in the one-shot engine."""

    rows: Tensor  # its weight as (out, in), rewritten in place
    target: Tensor  # what it should compute: its dense weight, or the dense-target correction of it
    stats: InputStats  # its calibration inputs' statistics (with the Hessian when the solver needs it)
    sparsity: float
    pattern: tuple[int, int] | None = None  # N:M
    before: Tensor | None = None  # True = pruned by an earlier step, in (out, in) layout: stays pruned


class Solver:
    """Base solver: rewrites kept weights from calibration statistics."""

    name: ClassVar[str] = "base"
    help: ClassVar[str] = ""
    #: chooses the mask itself, so it is a pruning method of its own (``--method``); otherwise it
    #: rewrites the kept weights under a mask something else chose
    prunes: ClassVar[bool] = False
    #: works on whole removed groups (heads, neurons) rather than on single weights
    structured: ClassVar[bool] = False
    #: needs each layer's input Hessian XᵀX
    needs_hessian: ClassVar[bool] = True
    #: one-shot defaults when it prunes: refit the kept weights afterwards, and calibrate each block's
    #: sublayers in order (q/k/v before o, gate/up before down) so the update sees pruned inputs
    refit_after: ClassVar[bool] = False
    sublayer_sequential: ClassVar[bool] = False

    @classmethod
    def build(cls, settings: SolverSettings) -> Solver:
        """An instance configured from the one-shot settings it reads."""
        return cls()

    @classmethod
    def describe(cls) -> str:
        return cls.help

    def solve(self, job: LayerJob, keep: Tensor | None) -> Tensor:
        """Rewrite ``job.rows`` in place; return the keep-mask (``keep``: the mask chosen before, when it
        does not prune itself)."""
        raise PrunekitError(f"solver {self.name} does not rewrite single layers")


class SparseGPT(Solver):
    name = "sparsegpt"
    help = "SparseGPT: picks the mask block by block and updates the kept weights (OBS), from calibration"
    prunes = True
    refit_after = True  # its greedy update leaves part of each layer's output error (bench/results/lm_oneshot.md)
    sublayer_sequential = True

    def __init__(self, damp: float = 0.01, block_size: int = 128) -> None:
        self.damp, self.block_size = damp, block_size

    @classmethod
    def build(cls, settings: SolverSettings) -> SparseGPT:
        return cls(settings.damp, settings.block_size)

    def solve(self, job: LayerJob, keep: Tensor | None) -> Tensor:
        new, keep = sparsegpt_prune(job.target, job.stats.hessian, sparsity=job.sparsity, pattern=job.pattern,
                                    block_size=self.block_size, damp=self.damp, pruned_before=job.before)
        job.rows.copy_(new)
        return keep


class Refit(Solver):
    name = "refit"
    help = "least-squares refit of each row's kept weights under a fixed mask (conjugate gradients)"

    def __init__(self, damp: float = 0.001, iters: int = 30) -> None:
        self.damp, self.iters = damp, iters

    @classmethod
    def build(cls, settings: SolverSettings) -> Refit:
        return cls(settings.refit_damp, settings.refit_iters)

    def solve(self, job: LayerJob, keep: Tensor | None) -> Tensor:
        if keep is None:
            raise PrunekitError("the least-squares refit keeps a mask chosen before it: give one")
        new, _ = refit_kept(job.rows, job.target, job.stats.xtx, keep, damp=self.damp, iters=self.iters)
        job.rows.copy_(new)
        return keep


class Reconstruct(Solver):
    name = "reconstruct"
    help = "structured: refit o_proj/down_proj's kept columns by least squares once groups are removed"
    structured = True

    def __init__(self, damp: float = 0.01) -> None:
        self.damp = damp

    def run(self, model: nn.Module, windows: Tensor, plan: StructuredPlan, *, batch_size: int = CALIB_BATCH,
            device: torch.device | None = None, progress: Callable[[int, int], None] | None = None) -> None:
        """Apply to a whole model block by block (:func:`prunekit.prune.reconstruct.reconstruct`)."""
        reconstruct(model, windows, plan, batch_size=batch_size, damp=self.damp, device=device, progress=progress)


_SOLVERS: Registry[Solver] = Registry("solver")
#: every registered solver by name
SOLVERS = _SOLVERS.items


def _prunes(cls: type[Solver]) -> bool:
    return cls.prunes and not cls.structured


def register(cls: type[Solver]) -> type[Solver]:
    """Make ``cls`` selectable by its ``name`` (usable as a class decorator)."""
    return _SOLVERS.register(cls)


def unregister(name: str) -> None:
    """Forget a solver (tests and plug-ins that register one for a while)."""
    _SOLVERS.unregister(name)


def get(name: str) -> type[Solver]:
    """The solver class registered as ``name`` (refused in one line when unknown)."""
    return _SOLVERS.get(name, "solver")


def pruning(name: str) -> type[Solver] | None:
    """The solver that prunes as method ``name`` by itself (SparseGPT), or None when ``name`` is not one."""
    cls = SOLVERS.get(name)
    return cls if cls is not None and _prunes(cls) else None


def describe() -> dict[str, str]:
    """``name → one-line help`` of every solver."""
    return _SOLVERS.describe()


for _cls in (SparseGPT, Refit, Reconstruct):
    register(_cls)

#: solvers that are a pruning method of their own (``--method sparsegpt``): they choose the mask
PRUNING_SOLVERS = Names(lambda: _SOLVERS.names(_prunes))

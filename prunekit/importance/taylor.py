"""First-order Taylor |w · dL/dw| (Molchanov et al. 2017/2019): the loss change if w were zeroed.

Accumulated as a sum of per-batch terms over calibration batches (or fine-tuning steps), because
a single batch's gradient is too noisy to rank millions of weights.
"""

from __future__ import annotations

from torch import Tensor

from prunekit.importance.base import AccumulatingImportance
from prunekit.importance.registry import GROUPS, WEIGHTS


class Taylor(AccumulatingImportance):
    name = "taylor"
    help = "|w·∂L/∂w| summed over calibration batches: the loss change if w were zeroed"
    applies = frozenset({WEIGHTS, GROUPS})

    def _term(self, weight: Tensor, grad: Tensor) -> Tensor:
        return (weight * grad).abs()

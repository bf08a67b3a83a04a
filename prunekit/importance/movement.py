"""Movement pruning (Sanh, Wolf & Rush 2020): keep weights moving away from zero during fine-tuning.

Scores are learned as S = -sum_t w_t · dL/dw_t over all fine-tuning steps: a weight whose gradient
pushes it towards larger magnitude gets a high score, one shrinking towards zero a low one. That is
why movement only makes sense with the gradual schedule: the scores exist only after training.
"""

from __future__ import annotations

from torch import Tensor

from prunekit.importance.base import AccumulatingImportance


class Movement(AccumulatingImportance):
    name = "movement"
    help = "-Σ w·∂L/∂w over fine-tuning: keeps weights moving away from zero"
    needs_training = True
    reset_after_prune = False  # the score is a running sum over the whole fine-tuning run

    def _term(self, weight: Tensor, grad: Tensor) -> Tensor:
        return -(weight * grad)

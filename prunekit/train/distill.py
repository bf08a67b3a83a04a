"""Knowledge distillation from the unpruned teacher (Hinton et al. 2015).

loss = α·CE(student, labels) + (1 − α)·T²·KL(teacher_T ‖ student_T); the T² keeps the soft-target
gradients on the same scale as the hard-label ones whatever the temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class DistillConfig:
    alpha: float = 0.5
    temperature: float = 2.0


def distill_loss(student: Tensor, teacher: Tensor, labels: Tensor, cfg: DistillConfig) -> Tensor:
    t = cfg.temperature
    hard = F.cross_entropy(student, labels)
    soft = F.kl_div(
        F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), log_target=True,
        reduction="batchmean",
    )
    return cfg.alpha * hard + (1.0 - cfg.alpha) * t * t * soft

"""Fine-tuning and recovery (on accelerate) and the distillation loss."""

from prunekit.train.distill import DistillConfig, Distiller, distill_loss, make_student
from prunekit.train.loop import TrainConfig, TrainResult, backward_passes, calibrate, forward_passes, train

__all__ = ["DistillConfig", "Distiller", "TrainConfig", "TrainResult", "backward_passes", "calibrate",
           "distill_loss", "forward_passes", "make_student", "train"]

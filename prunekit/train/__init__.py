"""Fine-tuning and recovery (on accelerate) and the distillation loss."""

from prunekit.train.distill import DistillConfig, distill_loss
from prunekit.train.loop import TrainConfig, TrainResult, backward_passes, train

__all__ = ["DistillConfig", "TrainConfig", "TrainResult", "backward_passes", "distill_loss", "train"]

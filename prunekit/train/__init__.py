"""Fine-tuning and recovery (on accelerate) and the distillation loss."""

from prunekit.train.distill import DistillConfig, Distiller, distill_loss, make_student
from prunekit.train.loop import TrainConfig, TrainResult, calibrate, train
from prunekit.train.lora import LoraOptions

__all__ = ["DistillConfig", "Distiller", "LoraOptions", "TrainConfig", "TrainResult", "calibrate", "distill_loss",
           "make_student", "train"]

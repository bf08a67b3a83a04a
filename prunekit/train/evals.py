"""Quality checkpoints during training: the task's metric every K steps (``--eval-every``), logged and kept
for the report. Nothing is selected on them: they show how recovery went, step by step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from prunekit.errors import PrunekitError
from prunekit.runtime import is_main_process, log
from prunekit.tasks import Task
from prunekit.tasks.base import EncodedSplit


@dataclass
class MetricCheckpoints:
    """An ``on_step`` hook for :func:`prunekit.train.train` measuring ``task``'s metric on ``data`` every
    ``every`` steps (0: only :meth:`start`'s measure before training); ``units_per_step`` (e.g. tokens per
    batch) labels each record with how much text training had seen."""

    task: Task
    model: nn.Module
    data: EncodedSplit
    tokenizer: PreTrainedTokenizerBase
    every: int = 0
    units_per_step: int | None = None
    unit: str = "tokens"
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.every < 0:
            raise PrunekitError(f"--eval-every must be ≥ 0 steps, got {self.every}")

    def measure(self, step: int) -> dict[str, Any]:
        metrics, _ = self.task.evaluate(self.model, self.data, self.tokenizer, desc=False)
        record = {"step": step, self.task.metric: float(metrics[self.task.metric])}
        if self.units_per_step:
            record[self.unit] = step * self.units_per_step
        self.records.append(record)
        if is_main_process():
            log(f"checkpoint at step {step}: {self.task.metric} {self.task.show(record[self.task.metric])}")
        return record

    def start(self) -> MetricCheckpoints:
        """The metric before the first step (step 0), so the records show where training started."""
        self.measure(0)
        return self

    def finish(self, step: int, metrics: dict[str, float]) -> None:
        """Close the records with the metric measured after the last step (by the caller's final stage)."""
        record = {"step": step, self.task.metric: float(metrics[self.task.metric])}
        if self.units_per_step:
            record[self.unit] = step * self.units_per_step
        self.records.append(record)

    def __call__(self, step: int, total: int, optimizer: torch.optim.Optimizer) -> bool:
        if self.every and step % self.every == 0 and step < total:
            self.measure(step)
        return False

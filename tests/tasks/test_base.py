"""The task interface: the registry, and the loop reading everything task-specific from the task.

A toy task registered for a test (a classifier whose primary metric is the validation loss, lower is
better, read unscaled) drives the real loop: if the loop still hard-coded accuracy, higher-is-better or
the 100× scale, or trained with the model's own loss instead of the task's, these tests would fail.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from torch import Tensor

from prunekit.config import DataOptions, PruneSettings, TrainOptions
from prunekit.errors import PrunekitError
from prunekit.pipeline import evaluate, finetune, open_workbench, prune
from prunekit.tasks import TASKS, Task, get_task
from prunekit.tasks.classification import ClassificationTask
from prunekit.train import DistillConfig, TrainConfig, train


class LossTask(ClassificationTask):
    """Classification judged by its cross-entropy (lower is better, shown as it is), counting the calls the
    loop makes to its training and distillation losses and to its reload check."""

    name = "toy-loss"
    metric = "loss"
    higher_is_better = False
    metric_scale = 1.0
    metric_unit = ""

    def __init__(self) -> None:
        self.calls = {"loss": 0, "distill_loss": 0, "same_predictions": 0}

    def loss(self, outputs: Any, batch: dict[str, Tensor]) -> Tensor:
        self.calls["loss"] += 1
        return super().loss(outputs, batch)

    def distill_loss(self, student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
        self.calls["distill_loss"] += 1
        return super().distill_loss(student, teacher, labels, cfg)

    def same_predictions(self, a, b) -> bool:
        self.calls["same_predictions"] += 1
        return super().same_predictions(a, b)


@pytest.fixture()
def toy(monkeypatch) -> LossTask:
    task = LossTask()
    monkeypatch.setitem(TASKS, task.name, task)
    return task


def test_registry_names_its_tasks_and_refuses_others(tmp_path, tiny_csv):
    assert isinstance(get_task("classification"), ClassificationTask)
    task = LossTask()
    assert get_task(task) is task
    with pytest.raises(PrunekitError, match=rf"unknown task 'nope'; known tasks: {re.escape(', '.join(TASKS))}$"):
        get_task("nope")
    with pytest.raises(PrunekitError, match="unknown task 'nope'"):  # before any output exists
        prune("unused", DataOptions(str(tiny_csv)), tmp_path / "out", task="nope")
    assert not (tmp_path / "out").exists()


def test_a_task_without_its_methods_cannot_be_built():
    class Half(Task):
        name, head, metric = "half", "classification", "accuracy"

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_finetune_and_evaluate_run_through_the_task(trained_tiny, tmp_path, toy):
    """Training uses the task's loss on every step, the report names the task, the reload check asks the
    task whether predictions are the same, and evaluate returns the task's metrics."""
    clf, csv = trained_tiny
    report = finetune(str(clf), DataOptions(str(csv)), tmp_path / "out", TrainOptions(epochs=0.2, lr=1e-4),
                      latency=False, task=toy.name)
    assert report["task"] == toy.name
    assert toy.calls["loss"] == report["training"]["steps"] > 0
    assert toy.calls["same_predictions"] == 1 and report["reload_check"]["same_predictions"]
    assert report["model"]["labels"] == ["negative", "positive"]
    metrics = evaluate(str(tmp_path / "out"), DataOptions(str(csv)), task=toy.name)
    assert metrics["loss"] == pytest.approx(report["stages"][-1]["metrics"]["loss"], abs=1e-5)


def _stop_run(clf, csv, out) -> dict:
    """Random pruning to 33, 66, 99 % with no recovery: the validation loss rises a little (< 0.05) at
    step 1, a lot at step 2. Read as accuracy points (×100), step 1's rise would already stop the run."""
    s = PruneSettings(schedule="iterative", steps=3, sparsity=0.99, method="random", max_drop=0.05,
                      finetune_epochs=0, lr=1e-3, batch_size=16, latency=False)
    return prune(str(clf), DataOptions(str(csv)), out, s, task=LossTask.name)


def test_max_drop_follows_the_tasks_metric_and_direction(trained_tiny, tmp_path, toy, monkeypatch):
    clf, csv = trained_tiny
    report = _stop_run(clf, csv, tmp_path / "lower")
    base = report["stages"][0]["validation_metrics"]["loss"]
    stopped = report["stopped"]
    assert stopped is not None and stopped["step"] == 2
    assert "took validation loss to " in stopped["reason"]
    assert f"points above the baseline {base:.2f} (more than --max-drop 0.05)" in stopped["reason"]
    final = report["stages"][-1]
    assert final["sparsity"] == pytest.approx(0.33, abs=0.01)  # step 1's model was kept
    assert 0 < final["validation_metrics"]["loss"] - base <= 0.05

    monkeypatch.setattr(LossTask, "higher_is_better", True)  # a rising loss is now an improvement
    assert _stop_run(clf, csv, tmp_path / "higher")["stopped"] is None


def test_distillation_uses_the_tasks_logit_loss(trained_tiny, toy):
    """Plain and intermediate-layer distillation both take the logit term from the task."""
    clf, csv = trained_tiny
    wb = open_workbench(str(clf), DataOptions(str(csv), max_train_samples=32), task=toy.name)
    assert wb.task is toy
    teacher = copy.deepcopy(wb.model).eval()
    for cfg in (DistillConfig(), DistillConfig(hidden_weight=0.5)):
        before = toy.calls["distill_loss"]
        result = train(wb.model, wb.train, wb.tokenizer, TrainConfig(epochs=1, batch_size=16), teacher=teacher,
                       distill=cfg, task=wb.task)
        assert toy.calls["distill_loss"] - before == result.steps == 2

"""Text regression: texts → one number (e.g. a sentiment score); Pearson, Spearman, MAE and MSE.

The model is a sequence classifier with a single output (``num_labels=1, problem_type="regression"``), so
transformers trains it with the mean squared error itself and every family, pruning granularity and saved
format that serves classification serves regression unchanged. What differs is here: numeric labels, the
head check, the metrics, distillation as MSE to the teacher's outputs, and a reload check on the values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from prunekit.data.options import DataOptions
from prunekit.data.regression import RegressionData, load_regression
from prunekit.errors import PrunekitError
from prunekit.io.hf import check_task, has_classification_head, load_classifier, load_config
from prunekit.io.textnet import is_textnet_dir
from prunekit.report.metrics import regression_metrics
from prunekit.tasks.base import EncodedSplit, Task

#: Largest difference between a saved model's outputs and the measured ones that still counts as the same.
RELOAD_TOLERANCE = 1e-4


def distill_loss(student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
    """α·MSE(student, labels) + (1 − α)·MSE(student, teacher): a regressor's output is the value itself, so
    the student learns the teacher's values directly (there is no distribution to soften: no temperature)."""
    pred = student.float().reshape(-1)
    hard = F.mse_loss(pred, labels.float().reshape(-1))
    soft = F.mse_loss(pred, teacher.float().reshape(-1))
    return cfg.alpha * hard + (1.0 - cfg.alpha) * soft


def evaluate(model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64,
             desc: str | bool | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Pearson, Spearman, MAE, MSE and the mean loss (the MSE), plus the outputs they came from."""
    outputs = RegressionTask().predict(model, data, tokenizer, batch_size, desc)
    preds, labels = outputs.reshape(-1), np.asarray(data.labels, dtype=np.float64)
    return regression_metrics(labels, preds, float(np.mean((preds - labels) ** 2))), outputs


class RegressionTask(Task):
    """Texts (or sentence pairs) → a number, scored by Pearson correlation (×100 in logs and ``--max-drop``,
    as GLUE's STS-B reports it)."""

    name = "regression"
    head = "regression"
    metric = "pearson"
    higher_is_better = True
    metric_scale = 100.0
    metric_unit = ""
    reload_class = AutoModelForSequenceClassification

    def load_data(self, data: DataOptions) -> RegressionData:
        return load_regression(data.data, data.text_columns, data.label_column)

    def load_model(self, spec: str, data: RegressionData, trust_remote_code: bool = False,
                   module: str | None = None, module_kwargs: dict[str, Any] | None = None,
                   ) -> tuple[nn.Module, PreTrainedTokenizerBase, bool]:
        """A fine-tuned regressor as it is, or an encoder with a new one-output head; a classifier (more than
        one output), a decoder LM or an LSTM/CNN folder is refused before its weights load."""
        if module is not None or module_kwargs is not None or is_textnet_dir(spec):
            raise PrunekitError(f"--task regression runs on transformers; {spec!r} is a prunekit LSTM/GRU/RNN, "
                                "TextCNN or custom-module folder")
        _, config = load_config(spec, trust_remote_code)
        check_task(spec, config, self.name)
        if has_classification_head(config) and (config.num_labels != 1 or config.problem_type
                                                not in (None, "regression")):
            raise PrunekitError(f"model {spec!r} is a classifier with {config.num_labels} labels "
                                f"({config.problem_type or 'single-label classification'}); --task regression needs "
                                "a regression head (one output) or a model without a head (prunekit adds one)")
        model, tokenizer, head_is_new = load_classifier(spec, data.label_names, trust_remote_code)
        model.config.problem_type = "regression"  # saved with the model: transformers' loss is then MSE
        return model, tokenizer, head_is_new

    def summary(self, data: RegressionData) -> str:
        return f"regression on {data.label_column!r}"

    def distill_loss(self, student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
        return distill_loss(student, teacher, labels, cfg)

    def evaluate(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 64, desc: str | bool | None = None) -> tuple[dict[str, float], np.ndarray]:
        return evaluate(model, data, tokenizer, batch_size, desc)

    def same_predictions(self, a: np.ndarray, b: np.ndarray) -> bool:
        """The same values, up to float noise (a regressor has no argmax to compare)."""
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=0.0, atol=RELOAD_TOLERANCE))


__all__ = ["RegressionTask", "distill_loss", "evaluate"]

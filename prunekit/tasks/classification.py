"""Sequence classification: texts → one of a set of labels; accuracy, F1, precision, recall.

The encoding, batching and prediction machinery is the shared text machinery of :mod:`prunekit.tasks.base`
(re-exported here, where callers have always imported it from); this module adds what is particular to
classification: labelled data with named classes, the label alignment with a trained head, cross-entropy
metrics and the soft-target distillation loss.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from prunekit.data import ClassificationData, load_classification
from prunekit.data.options import DataOptions
from prunekit.errors import PrunekitError
from prunekit.io.hf import label_names_of, load_classifier
from prunekit.models import TextNetOptions, new_text_model
from prunekit.report.metrics import classification_metrics
from prunekit.tasks.base import EncodedSplit, Task, predict

# The shared text machinery, importable from here as it always was (it moved to tasks/base.py).
from prunekit.tasks.base import calibration_loader as calibration_loader
from prunekit.tasks.base import encode as encode
from prunekit.tasks.base import latency_inputs as latency_inputs
from prunekit.tasks.base import make_loader as make_loader
from prunekit.tasks.base import packed_windows as packed_windows


def evaluate(
    model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64, desc=None
) -> tuple[dict[str, float], np.ndarray]:
    """accuracy, f1_macro, precision, recall and mean cross-entropy loss, plus the logits they came from."""
    logits = predict(model, data, tokenizer, batch_size, desc)
    labels = np.asarray(data.labels)
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())
    return classification_metrics(labels, logits.argmax(-1), loss), logits


def distill_loss(student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
    """α·CE(student, labels) + (1 − α)·T²·KL(teacher_T ‖ student_T) (Hinton et al. 2015; see
    :mod:`prunekit.train.distill`)."""
    t = cfg.temperature
    hard = F.cross_entropy(student, labels)
    soft = F.kl_div(
        F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), log_target=True,
        reduction="batchmean",
    )
    return cfg.alpha * hard + (1.0 - cfg.alpha) * t * t * soft


def match_labels(ds: ClassificationData, names: list[str], spec: str) -> tuple[ClassificationData, list[str]]:
    """The data re-encoded in the model's label ids, and a note when that took a decision.

    A trained head must predict exactly the data's classes: a 3-label model on 2-class data (or the reverse)
    would be trained and scored against a head that does not fit, without a word, so both are refused. Names
    must match too (string labels that differ are refused by :meth:`ClassificationData.with_labels`), with one
    exception: integer labels 0…n-1 and a model with as many named labels are the transformers convention
    (label = id), so they are read as its ids and the mapping is noted.
    """
    def shown(labels: list[str]) -> str:
        return "" if all(n.isdigit() for n in labels) else f" ({', '.join(labels)})"

    if len(names) != ds.num_labels:
        raise PrunekitError(f"model {spec!r} has {len(names)} labels{shown(names)} but the data {ds.source} has "
                            f"{ds.num_labels} classes{shown(ds.label_names)}; give data with the model's classes, "
                            "or a model without a classification head (prunekit trains a new one)")
    if ds.label_names == [str(i) for i in range(len(names))] and ds.label_names != names:
        ds = replace(ds, label_names=list(names))
        return ds, [f"labels: the data's 0…{len(names) - 1} read as the model's label ids "
                    f"({', '.join(f'{i} = {n}' for i, n in enumerate(names))})"]
    return ds.with_labels(names), []


class ClassificationTask(Task):
    """Texts (or sentence pairs) → one of the data's classes, scored by accuracy."""

    name = "classification"
    head = "classification"
    metric = "accuracy"
    higher_is_better = True
    metric_scale = 100.0
    metric_unit = " %"
    reload_class = AutoModelForSequenceClassification

    def load_data(self, data: DataOptions) -> ClassificationData:
        return load_classification(data.data, data.text_columns, data.label_column)

    def load_model(self, spec: str, data: ClassificationData, trust_remote_code: bool = False,
                   module: str | None = None, module_kwargs: dict[str, Any] | None = None,
                   ) -> tuple[nn.Module, PreTrainedTokenizerBase, bool]:
        return load_classifier(spec, data.label_names, trust_remote_code, module, module_kwargs)

    def new_model(self, opts: TextNetOptions, data: ClassificationData) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        return new_text_model(opts, data)

    def align(self, data: ClassificationData, model: nn.Module, spec: str) -> tuple[ClassificationData, list[str]]:
        return match_labels(data, label_names_of(model.config), spec)

    def summary(self, data: ClassificationData) -> str:
        return f"{len(data.label_names)} labels"

    def distill_loss(self, student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
        return distill_loss(student, teacher, labels, cfg)

    def evaluate(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 64, desc: str | bool | None = None) -> tuple[dict[str, float], np.ndarray]:
        return evaluate(model, data, tokenizer, batch_size, desc)

    def same_predictions(self, a: np.ndarray, b: np.ndarray) -> bool:
        return bool((a.argmax(-1) == b.argmax(-1)).all())

"""The workbench a run prunes on: a model with its tokenizer and its task's tokenised splits.

Opening one (read the data the task's way, load the model with the head the task needs, align a trained
head's labels, tokenise every split once) is shared by the loop (:mod:`prunekit.pipeline`), recipes and
search, so it sits below all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn
from transformers import PreTrainedTokenizerBase

from prunekit.data.options import DataOptions
from prunekit.errors import PrunekitError
from prunekit.models import TextNetOptions
from prunekit.report.measure import StageLatency
from prunekit.runtime import default_device, log, seed_everything
from prunekit.tasks import Task, get_task
from prunekit.tasks.base import EncodedSplit, TaskData


@dataclass
class Workbench:
    """A model with its tokenizer and the tokenised splits it is measured on, for one task."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    data: TaskData
    train: EncodedSplit
    validation: EncodedSplit
    test: EncodedSplit
    head_is_new: bool
    model_spec: str
    notes: list[str] = field(default_factory=list)
    latency: StageLatency = field(default_factory=StageLatency)  # stages timed together when the run ends
    task: Task = field(default_factory=lambda: get_task("classification"))

    def evaluate(self, split: str = "test") -> tuple[dict[str, float], np.ndarray]:
        return self.task.evaluate(self.model, getattr(self, split), self.tokenizer, desc=f"evaluate {split}")


def open_workbench(
    model: str | None, data: DataOptions, seed: int = 0, trust_remote_code: bool = False,
    new: TextNetOptions | None = None, module: str | None = None, module_kwargs: dict[str, Any] | None = None,
    task: str | Task = "classification",
) -> Workbench:
    """Load data and model the way ``task`` reads them, align the data with a trained head (a classifier's
    labels), and tokenise every split once.

    With ``new``, the model is a freshly initialised LSTM/GRU/RNN or TextCNN (and its tokenizer may be a
    vocabulary built from the training split) instead of the one ``model`` names. ``module`` and
    ``module_kwargs`` rebuild a user's own module from a folder prunekit saved it in (see --module)."""
    t = get_task(task)
    seed_everything(seed)
    ds = t.load_data(data)
    notes: list[str] = []
    if new is not None:
        subsets(ds, data)  # first: a new vocabulary comes from the training texts actually used
        m, tok = t.new_model(new, ds)
        model, head_is_new = f"new {new.module or new.arch}", True
    else:
        if model is None:
            raise PrunekitError("give a model (--model) or a new architecture (--arch)")
        m, tok, head_is_new = t.load_model(model, ds, trust_remote_code, module, module_kwargs)
        if not head_is_new:
            ds, notes = t.align(ds, m, model)
            for note in notes:
                log(note)
        subsets(ds, data)
    m.to(default_device())
    enc = {s: t.encode(getattr(ds, s), tok, data.max_length) for s in ("train", "validation", "test")}
    log(
        f"{model}: {m.config.model_type}, {t.summary(ds)}; data {ds.source}: "
        f"{len(ds.train)} train / {len(ds.validation)} validation / {len(ds.test)} test"
    )
    return Workbench(m, tok, ds, enc["train"], enc["validation"], enc["test"], head_is_new, model, notes, task=t)


def subsets(ds: TaskData, data: DataOptions) -> None:
    """Cap the splits at --max-train-samples / --max-eval-samples (seeded picks)."""
    if data.max_train_samples:
        ds.train = ds.train.subset(data.max_train_samples, seed=0)
    if data.max_eval_samples:
        ds.validation = ds.validation.subset(data.max_eval_samples, seed=0)
        ds.test = ds.test.subset(data.max_eval_samples, seed=0)

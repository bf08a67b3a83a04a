"""What a saved classifier really predicts, computed without prunekit's batching, padding or metrics.

prunekit's own reload check (``report["reload_check"]``) raises before saving when it fails, so asserting
it in a test proves nothing. These helpers reload the folder the way a user would (plain
``AutoModelForSequenceClassification`` + ``AutoTokenizer``, one text at a time, no padding) and compare
with the numbers prunekit reported. Only the choice of test examples comes from prunekit's data loader.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from prunekit.config import DataOptions
from prunekit.data import load_classification


def held_out_examples(data: DataOptions) -> tuple[list[tuple[str, ...]], list[str]]:
    """The test split's texts and label *names*, subset as ``--max-eval-samples`` does."""
    ds = load_classification(data.data, data.text_columns, data.label_column)
    test = ds.test.subset(data.max_eval_samples, seed=0) if data.max_eval_samples else ds.test
    return test.texts, [ds.label_names[i] for i in test.labels]


@torch.no_grad()
def plain_logits(model: nn.Module, tokenizer, texts: list[tuple[str, ...]], max_length: int = 128) -> torch.Tensor:
    """Logits of each text on its own, as a user calls a model: no batching, so no padding."""
    model.eval()
    rows = []
    for text in texts:
        enc = tokenizer(*text, truncation=True, max_length=max_length, return_tensors="pt")
        rows.append(model(**{k: v for k, v in enc.items() if k in tokenizer.model_input_names}).logits[0].float())
    return torch.stack(rows)


def assert_reproduces(folder: str | Path, data: DataOptions, metrics: dict, model: nn.Module | None = None) -> None:
    """The folder, reloaded by plain transformers (or ``model``: e.g. ``prunekit.load`` for uneven widths),
    gets exactly the reported test accuracy and, to float precision, the reported loss."""
    model = model if model is not None else AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts, names = held_out_examples(data)
    logits = plain_logits(model, tokenizer, texts, data.max_length)
    label2id = {name: int(i) for i, name in model.config.id2label.items()}
    labels = torch.tensor([label2id[n] for n in names])
    accuracy = float((logits.argmax(-1) == labels).double().mean())
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-9), f"reloaded: {accuracy}, reported: {metrics}"
    assert float(F.cross_entropy(logits, labels)) == pytest.approx(metrics["loss"], rel=1e-4, abs=1e-6)

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


def held_out_examples(data: DataOptions, split: str = "test") -> tuple[list[tuple[str, ...]], list[str]]:
    """A held-out split's texts and label *names*, subset as ``--max-eval-samples`` does."""
    ds = load_classification(data.data, data.text_columns, data.label_column)
    part = ds.splits[split]
    part = part.subset(data.max_eval_samples, seed=0) if data.max_eval_samples else part
    return part.texts, [ds.label_names[i] for i in part.labels]


@torch.no_grad()
def plain_logits(model: nn.Module, tokenizer, texts: list[tuple[str, ...]], max_length: int = 128) -> torch.Tensor:
    """Logits of each text on its own, as a user calls a model: no batching, so no padding."""
    model.eval()
    rows = []
    for text in texts:
        enc = tokenizer(*text, truncation=True, max_length=max_length, return_tensors="pt")
        rows.append(model(**{k: v for k, v in enc.items() if k in tokenizer.model_input_names}).logits[0].float())
    return torch.stack(rows)


def plain_metrics(folder: str | Path, data: DataOptions, model: nn.Module | None = None,
                  split: str = "test") -> dict[str, float]:
    """Accuracy and mean cross-entropy of the folder, reloaded by plain transformers (or ``model``: e.g.
    ``prunekit.load`` for uneven widths), on a held-out split of ``data``."""
    model = model if model is not None else AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts, names = held_out_examples(data, split)
    logits = plain_logits(model, tokenizer, texts, data.max_length)
    label2id = {name: int(i) for i, name in model.config.id2label.items()}
    labels = torch.tensor([label2id[n] for n in names])
    return {"accuracy": float((logits.argmax(-1) == labels).double().mean()),
            "loss": float(F.cross_entropy(logits, labels))}


def assert_reproduces(folder: str | Path, data: DataOptions, metrics: dict, model: nn.Module | None = None) -> None:
    """The reloaded folder gets exactly the reported test accuracy and, to float precision, the reported loss."""
    plain = plain_metrics(folder, data, model)
    why = f"reloaded: {plain}, reported: {metrics}"
    assert plain["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9), why
    assert plain["loss"] == pytest.approx(metrics["loss"], rel=1e-4, abs=1e-6), why

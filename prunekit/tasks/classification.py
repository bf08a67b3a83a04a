"""Sequence classification: tokenise a split once, batch it, and measure a model on it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

from prunekit.data import Split
from prunekit.errors import PrunekitError
from prunekit.report.metrics import classification_metrics


@dataclass
class EncodedSplit(Dataset):
    """Token ids of one split (unpadded) plus labels; padding happens per batch."""

    features: list[dict[str, list[int]]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**self.features[i], "labels": self.labels[i]}


def encode(split: Split, tokenizer: PreTrainedTokenizerBase, max_length: int) -> EncodedSplit:
    columns = list(zip(*split.texts, strict=True)) if split.texts else [[]]
    enc = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length)
    keys = [k for k in enc if k in tokenizer.model_input_names]
    features = [{k: enc[k][i] for k in keys} for i in range(len(split))]
    return EncodedSplit(features, list(split.labels))


def make_loader(
    data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int, *, shuffle: bool, seed: int = 0
) -> DataLoader:
    """Training order: shuffled, but grouped by length (as HF's ``group_by_length``) so batches carry
    little padding: on short texts this roughly halves the cost of an epoch on CPU."""
    collate = DataCollatorWithPadding(tokenizer)
    if not shuffle:
        return DataLoader(data, batch_size=batch_size, collate_fn=collate)
    gen = torch.Generator().manual_seed(seed)
    lengths = [len(next(iter(f.values()))) for f in data.features]
    sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=gen)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=collate)


def calibration_loader(data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                       seed: int = 0) -> DataLoader:
    """The seeded order every calibration pass walks (criteria, group scores, SparseGPT's windows), so
    all methods calibrate on the same training examples."""
    return make_loader(data, tokenizer, batch_size, shuffle=True, seed=seed + 7919)


def _frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text: [CLS] … [SEP] (BERT), <s> … </s>
    (RoBERTa), none (GPT-2). Read off a probe text, since only the tokenizer's post-processor knows them."""
    full = tokenizer("a")["input_ids"]
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    for k in range(len(full) - len(body) + 1):
        if full[k : k + len(body)] == body:
            return full[:k], full[k + len(body) :]
    raise PrunekitError("packing calibration windows: the tokenizer's special tokens do not frame its text")


def packed_windows(data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batches: int, batch_size: int,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Calibration text for one-shot solvers (SparseGPT) as model inputs: (n, seq_len) input_ids with no
    padding, and token_type_ids beside them when the examples carry them.

    The training examples calibration uses for every criterion (the first ``batches`` × ``batch_size``
    of :func:`calibration_loader`'s order) are stripped of the special tokens the tokenizer frames each
    text with ([CLS]/[SEP]; GPT-2 has none), concatenated and cut into windows as long as the longest
    training example, each framed again the same way: every token is real, so no padding can enter a
    Hessian, and no window is longer than what the model was trained on. Every token keeps its token
    type: a sentence pair's second text (type 1) must not be calibrated as if it were a first text.
    """
    head, tail = _frame(tokenizer)
    typed = bool(data.features) and "token_type_ids" in data.features[0]
    order = list(iter(calibration_loader(data, tokenizer, batch_size, seed).sampler))
    body: list[int] = []
    body_types: list[int] = []
    for i in order[: batches * batch_size]:
        ids = data.features[i]["input_ids"]
        start = len(head) if ids[: len(head)] == head else 0
        end = len(ids) - len(tail)
        if end < start or ids[end:] != tail:
            end = len(ids)
        body.extend(ids[start:end])
        if typed:
            body_types.extend(data.features[i]["token_type_ids"][start:end])
    if not body:
        raise PrunekitError("no calibration text: the training examples are empty")
    width = max(1, max(len(f["input_ids"]) for f in data.features) - len(head) - len(tail))
    n = max(1, len(body) // width)  # the tail that does not fill a window is dropped (unless it is all)
    width = min(width, len(body))
    rows = [slice(k * width, (k + 1) * width) for k in range(n)]
    windows = {"input_ids": torch.tensor([[*head, *body[r], *tail] for r in rows], dtype=torch.long)}
    if typed:  # the opening [CLS] starts the first text (type 0); a closing [SEP] ends the text before it
        windows["token_type_ids"] = torch.tensor(
            [[0] * len(head) + body_types[r] + body_types[r][-1:] * len(tail) for r in rows], dtype=torch.long)
    return windows


def _length_sorted_batches(data: EncodedSplit, batch_size: int) -> Iterator[list[int]]:
    # Sorting by length before batching cuts padding, so evaluation costs what the text costs.
    order = sorted(range(len(data)), key=lambda i: len(next(iter(data.features[i].values()))))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.inference_mode()
def predict(
    model: nn.Module,
    data: EncodedSplit,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 64,
    desc: str | None = None,
) -> np.ndarray:
    """Logits for every example, in the split's order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = DataCollatorWithPadding(tokenizer)
    logits = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    batches = list(_length_sorted_batches(data, batch_size))
    for idx in tqdm(batches, desc=desc or "evaluate", leave=False, disable=desc is False):
        batch = collate([data.features[i] for i in idx])
        out = model(**{k: v.to(device) for k, v in batch.items()})
        logits[idx] = out.logits.float().cpu().numpy()
    model.train(was_training)
    return logits


def evaluate(
    model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64, desc=None
) -> tuple[dict[str, float], np.ndarray]:
    """accuracy, f1_macro, precision, recall and mean cross-entropy loss, plus the logits they came from."""
    logits = predict(model, data, tokenizer, batch_size, desc)
    labels = np.asarray(data.labels)
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())
    return classification_metrics(labels, logits.argmax(-1), loss), logits


def latency_inputs(tokenizer: PreTrainedTokenizerBase, vocab_size: int, device: torch.device):
    """A ``make_inputs(batch, seq_len)`` for latency: random ids of the model's own input names."""

    def make(batch: int, seq_len: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        inputs = {"input_ids": torch.randint(0, vocab_size, (batch, seq_len), generator=gen)}
        names = tokenizer.model_input_names
        if "attention_mask" in names:
            inputs["attention_mask"] = torch.ones(batch, seq_len, dtype=torch.long)
        if "token_type_ids" in names:
            inputs["token_type_ids"] = torch.zeros(batch, seq_len, dtype=torch.long)
        return {k: v.to(device) for k, v in inputs.items()}

    return make

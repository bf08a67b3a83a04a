"""Token classification (NER): words → one BIO tag each; entity-level F1 with seqeval.

The model is a ``*ForTokenClassification`` (an encoder with a per-token head), so every family, pruning
granularity and saved format that serves classification serves it unchanged. What differs is here: word-level
data, labels aligned to sub-tokens (first sub-token of a word scored, the rest and specials ignored with -100),
per-word outputs, seqeval metrics, and distillation over the scored tokens only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, PreTrainedTokenizerBase

from prunekit.data.options import DataOptions
from prunekit.data.tokens import IGNORE, TokenData, TokenSplit, align_labels, load_tokens
from prunekit.errors import PrunekitError
from prunekit.io.hf import load_classifier
from prunekit.io.textnet import is_textnet_dir
from prunekit.report.metrics import token_metrics
from prunekit.tasks.base import Collate, EncodedSplit, Task, length_sorted_batches


def encode(split: TokenSplit, tokenizer: PreTrainedTokenizerBase, max_length: int) -> EncodedSplit:
    """Pre-split words tokenised once (``is_split_into_words``); each word's tag on its first sub-token."""
    if not getattr(tokenizer, "is_fast", False):
        raise PrunekitError("--task token-classification needs a fast tokenizer (word ids for label alignment)")
    enc = tokenizer(split.tokens, is_split_into_words=True, truncation=True, max_length=max_length)
    keys = [k for k in enc if k in tokenizer.model_input_names]
    features = [{k: enc[k][i] for k in keys} for i in range(len(split))]
    labels = [align_labels(enc.word_ids(i), split.labels[i]) for i in range(len(split))]
    return EncodedSplit(features, labels)


def scored(data: EncodedSplit) -> list[np.ndarray]:
    """Per example, the positions whose label counts (a word's first sub-token)."""
    return [np.flatnonzero(np.asarray(labels) != IGNORE) for labels in data.labels]


def distill_loss(student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
    """α·CE(student, labels) + (1 − α)·T²·KL(teacher_T ‖ student_T), both over the scored tokens only (padding,
    specials and later sub-tokens carry no label and no teacher signal worth copying)."""
    keep = labels.reshape(-1) != IGNORE
    s, t = student.reshape(-1, student.shape[-1])[keep], teacher.reshape(-1, teacher.shape[-1])[keep]
    if s.numel() == 0:
        return student.sum() * 0.0
    temp = cfg.temperature
    hard = F.cross_entropy(s, labels.reshape(-1)[keep])
    soft = F.kl_div(F.log_softmax(s / temp, dim=-1), F.log_softmax(t / temp, dim=-1), log_target=True,
                    reduction="batchmean")
    return cfg.alpha * hard + (1.0 - cfg.alpha) * temp * temp * soft


class TokenClassificationTask(Task):
    """Tagged words (BIO/IOB2) → a tag per word, scored by entity-level F1 (seqeval, strict IOB2)."""

    name = "token-classification"
    head = "token-classification"
    metric = "f1"
    higher_is_better = True
    metric_scale = 100.0
    metric_unit = ""
    reload_class = AutoModelForTokenClassification

    def load_data(self, data: DataOptions) -> TokenData:
        if data.text_columns is not None and len(data.text_columns) != 1:
            raise PrunekitError("--task token-classification reads one token column (--text-column tokens)")
        return load_tokens(data.data, data.text_columns[0] if data.text_columns else None, data.label_column)

    def load_model(self, spec: str, data: TokenData, trust_remote_code: bool = False,
                   module: str | None = None, module_kwargs: dict[str, Any] | None = None,
                   ) -> tuple[nn.Module, PreTrainedTokenizerBase, bool]:
        """A fine-tuned tagger as it is, or an encoder with a new token head sized to the data's tags; a
        sequence classifier, QA, seq2seq or LM checkpoint is refused before its weights load."""
        if module is not None or module_kwargs is not None or is_textnet_dir(spec):
            raise PrunekitError(f"--task token-classification runs on transformers; {spec!r} is a prunekit "
                                "LSTM/GRU/RNN, TextCNN or custom-module folder")
        return load_classifier(spec, data.label_names, trust_remote_code, task=self.name)

    def align(self, data: TokenData, model: nn.Module, spec: str) -> tuple[TokenData, list[str]]:
        """A trained tagger's tag ids must be the data's: refuse a tag the model does not know, re-index the rest."""
        id2label = model.config.id2label
        names = [str(id2label[i]) for i in range(len(id2label))]
        if names == data.label_names:
            return data, []
        missing = sorted(set(data.label_names) - set(names))
        if missing:
            raise PrunekitError(f"model {spec!r} does not predict the tags {missing} the data uses "
                                f"(its tags: {', '.join(names)})")
        remap = [names.index(n) for n in data.label_names]
        splits = {k: TokenSplit(s.tokens, [[remap[i] for i in row] for row in s.labels])
                  for k, s in data.splits.items()}
        return TokenData(splits["train"], splits["validation"], splits["test"], names, data.source), [
            "tag ids follow the model's id2label"]

    def summary(self, data: TokenData) -> str:
        return f"token classification into {data.num_labels} tags"

    def encode(self, split: TokenSplit, tokenizer: PreTrainedTokenizerBase, max_length: int) -> EncodedSplit:
        return encode(split, tokenizer, max_length)

    def collate(self, tokenizer: PreTrainedTokenizerBase) -> Collate:
        """Pads inputs, and labels with -100 so padding is never scored."""
        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    def distill_loss(self, student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
        return distill_loss(student, teacher, labels, cfg)

    def predict(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                batch_size: int = 64, desc: str | bool | None = None) -> np.ndarray:
        """Per-word logits, shape (examples, most words, tags), zero-padded after each sentence's last word."""
        per_token = _token_logits(model, data, tokenizer, batch_size, desc, self.collate(tokenizer))
        keep = scored(data)
        out = np.zeros((len(data), max((len(k) for k in keep), default=0), model.config.num_labels), np.float32)
        for i, (logits, k) in enumerate(zip(per_token, keep, strict=True)):
            out[i, : len(k)] = logits[k]
        return out

    def evaluate(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 64, desc: str | bool | None = None) -> tuple[dict[str, float], np.ndarray]:
        """Entity precision/recall/F1, token accuracy and the mean cross-entropy over words."""
        logits = self.predict(model, data, tokenizer, batch_size, desc)
        names = model.config.id2label
        gold = [np.asarray(labels)[k] for labels, k in zip(data.labels, scored(data), strict=True)]
        flat_logits = np.concatenate([logits[i, : len(g)] for i, g in enumerate(gold)]) if gold else logits[:0, 0]
        flat_gold = np.concatenate(gold) if gold else np.zeros(0, np.int64)
        loss = float(F.cross_entropy(torch.from_numpy(flat_logits), torch.from_numpy(flat_gold)).item())
        true = [[str(names[int(t)]) for t in g] for g in gold]
        pred = [[str(names[int(p)]) for p in logits[i, : len(g)].argmax(-1)] for i, g in enumerate(gold)]
        return token_metrics(true, pred, loss), logits

    def same_predictions(self, a: np.ndarray, b: np.ndarray) -> bool:
        """The same tag for every word (padding compares equal on both sides)."""
        return a.shape == b.shape and bool(np.array_equal(a.argmax(-1), b.argmax(-1)))


def _token_logits(model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                  desc: str | bool | None, collate: Collate) -> list[np.ndarray]:
    """Logits of every sub-token of every example (unpadded), in the split's order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[np.ndarray] = [np.zeros(0)] * len(data)
    with torch.inference_mode():
        for idx in length_sorted_batches(data, batch_size):  # little padding; right-padded, so rows cut cleanly
            batch = collate([data.features[i] for i in idx])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = logits[row, : len(data.features[i]["input_ids"])]
    model.train(was_training)
    return out


__all__ = ["TokenClassificationTask", "distill_loss", "encode"]

"""Extractive question answering: (question, context) → the answer's span in the context; SQuAD EM and F1.

Contexts longer than the model are read in strided windows (``doc_stride`` tokens of overlap, as HF's
``run_qa``), each window labelled with the answer's start/end token (the [CLS] index when the answer lies
outside it). An example's prediction is its best span over all its windows (start ≤ end, at most
``max_answer_length`` tokens, among the n best start and end logits), scored with SQuAD's official
normalisation. Distillation is KL on the start and end distributions plus α × the span cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding, PreTrainedTokenizerBase

from prunekit.data.options import DataOptions
from prunekit.data.squad import QAData, QAExample, QASplit, load_squad
from prunekit.errors import PrunekitError
from prunekit.io.hf import check_task, head_of, load_config, load_tokenizer
from prunekit.report.metrics import squad_metrics
from prunekit.tasks.base import Collate, EncodedSplit, Task, length_sorted_batches

N_BEST = 20


@dataclass
class QAEncoded(EncodedSplit):
    """Windows of one split: ``labels`` are (start, end) token indices; each window knows its example and the
    character offsets of its context tokens (None elsewhere), so spans decode back to context text."""

    example_of: list[int] = field(default_factory=list)
    offsets: list[list[tuple[int, int] | None]] = field(default_factory=list)
    examples: list[QAExample] = field(default_factory=list)
    max_answer_length: int = 30


def encode_windows(split: QASplit, tokenizer: PreTrainedTokenizerBase, max_length: int = 384,
                   doc_stride: int | None = None) -> QAEncoded:
    """Question + context windows (``truncation="only_second"``) with start/end labels per window; the
    stride (tokens shared by consecutive windows) is the split's unless given."""
    doc_stride = split.doc_stride if doc_stride is None else doc_stride
    if not getattr(tokenizer, "is_fast", False):
        raise PrunekitError("--task question-answering needs a fast tokenizer (character offsets of tokens)")
    if doc_stride < 0 or doc_stride >= max_length:
        raise PrunekitError(f"--doc-stride must be in [0, {max_length}), got {doc_stride}")
    questions = [e.question.lstrip() for e in split.examples]
    contexts = [e.context for e in split.examples]
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_length,
                    stride=doc_stride, return_overflowing_tokens=doc_stride > 0, return_offsets_mapping=True)
    sample_map = enc.pop("overflow_to_sample_mapping", list(range(len(questions))))
    if doc_stride == 0:
        for i, seq in enumerate(enc.sequence_ids(k) for k in range(len(questions))):
            last = max(j for j, s in enumerate(seq) if s == 1) if 1 in seq else -1
            if last < 0 or enc["offset_mapping"][i][last][1] < len(contexts[i].rstrip()):
                raise PrunekitError(f"question {split.examples[i].id!r}: its context is longer than {max_length} "
                                    "tokens and --doc-stride is 0; give a stride so long contexts are read in windows")
    keys = [k for k in enc if k in tokenizer.model_input_names]
    features, labels, offsets = [], [], []
    cls = 0
    for w, ex_i in enumerate(sample_map):
        seq = enc.sequence_ids(w)
        offs = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][w], seq, strict=True)]
        features.append({k: enc[k][w] for k in keys})
        offsets.append(offs)
        labels.append(_span_label(split.examples[ex_i], offs, cls))
    return QAEncoded(features, labels, list(sample_map), offsets, list(split.examples), split.max_answer_length)


def _span_label(ex: QAExample, offs: list[tuple[int, int] | None], cls: int) -> tuple[int, int]:
    """Token (start, end) of the example's first located answer inside the window, else (cls, cls)."""
    located = [(t, s) for t, s in ex.answers if s >= 0]
    if not located:
        return cls, cls
    text, a = located[0]
    b = a + len(text)
    ctx = [i for i, o in enumerate(offs) if o is not None]
    if not ctx or offs[ctx[0]][0] > a or offs[ctx[-1]][1] < b:
        return cls, cls
    start = next(i for i in ctx if offs[i][1] > a)
    end = next(i for i in reversed(ctx) if offs[i][0] < b)
    return start, end


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: list[tuple[int, int] | None],
              max_answer_length: int = 30, n_best: int = N_BEST) -> tuple[float, int, int] | None:
    """The best (score, char start, char end) in one window: start ≤ end, ≤ ``max_answer_length`` tokens,
    both inside the context, among the ``n_best`` start and end logits; None when no span qualifies."""
    best = None
    starts = np.argsort(start_logits)[::-1][:n_best]
    ends = np.argsort(end_logits)[::-1][:n_best]
    for s in starts:
        for e in ends:
            if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                continue
            if e < s or e - s + 1 > max_answer_length:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best[0]:
                best = (score, offsets[s][0], offsets[e][1])
    return best


def decode(data: QAEncoded, logits: np.ndarray, max_answer_length: int = 30) -> list[str]:
    """Each example's answer text: its best span over all its windows ("" when none qualifies)."""
    best: dict[int, tuple[float, int, int]] = {}
    for w, ex_i in enumerate(data.example_of):
        n = len(data.offsets[w])
        span = best_span(logits[w, :n, 0], logits[w, :n, 1], data.offsets[w], max_answer_length)
        if span is not None and (ex_i not in best or span[0] > best[ex_i][0]):
            best[ex_i] = span
    return [data.examples[i].context[best[i][1]: best[i][2]] if i in best else "" for i in range(len(data.examples))]


def distill_loss(student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
    """KL(teacher ‖ student) on the start and on the end distributions (temperature T, × T²), plus α × the
    span cross-entropy on the labels. Logits are (batch, seq, 2): start and end."""
    t = cfg.temperature
    soft = sum(F.kl_div(F.log_softmax(student[..., k].float() / t, -1), F.log_softmax(teacher[..., k].float() / t, -1),
                        reduction="batchmean", log_target=True) for k in (0, 1)) * (t * t) / 2
    hard = sum(F.cross_entropy(student[..., k].float(), labels[:, k]) for k in (0, 1)) / 2
    return cfg.alpha * hard + (1.0 - cfg.alpha) * soft


class _Collate:
    """Pad the windows; labels become transformers' ``start_positions``/``end_positions`` (its own loss)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, items: list[dict]) -> dict[str, Tensor]:
        labels = torch.tensor([it["labels"] for it in items], dtype=torch.long) if "labels" in items[0] else None
        batch = self.pad([{k: v for k, v in it.items() if k != "labels"} for it in items])
        if labels is not None:
            batch["start_positions"], batch["end_positions"] = labels[:, 0], labels[:, 1]
        return dict(batch)


class QuestionAnsweringTask(Task):
    """Extractive QA (SQuAD): the answer is a span of the context, scored by SQuAD F1 (primary) and EM."""

    name = "question-answering"
    head = "question-answering"
    metric = "f1"
    higher_is_better = True
    metric_scale = 100.0
    metric_unit = ""
    reload_class = AutoModelForQuestionAnswering

    def load_data(self, data: DataOptions) -> QAData:
        return load_squad(data.data, doc_stride=data.doc_stride, max_answer_length=data.max_answer_length)

    def load_model(self, spec: str, data: QAData, trust_remote_code: bool = False, module: str | None = None,
                   module_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, PreTrainedTokenizerBase, bool]:
        """A question-answering model as it is, or an encoder with a fresh span head; other heads refused."""
        if module is not None or module_kwargs is not None:
            raise PrunekitError("--task question-answering runs on transformers models, not --module folders")
        where, config = load_config(spec, trust_remote_code)
        check_task(spec, config, self.head)
        head_is_new = head_of(config)[1] != "question answering"
        model = AutoModelForQuestionAnswering.from_pretrained(where, config=config, trust_remote_code=trust_remote_code)
        return model, load_tokenizer(where, trust_remote_code), head_is_new

    def summary(self, data: QAData) -> str:
        return f"extractive question answering ({len(data.train)} training questions)"

    def describe(self, data: QAData) -> dict[str, dict[str, Any]]:
        return {"model": {"labels": data.label_names},
                "data": {"text_columns": list(data.text_columns), "label_column": data.label_column,
                         "doc_stride": data.train.doc_stride, "max_answer_length": data.train.max_answer_length,
                         "notes": data.notes}}

    def encode(self, split: QASplit, tokenizer: PreTrainedTokenizerBase, max_length: int) -> QAEncoded:
        return encode_windows(split, tokenizer, max_length)

    def collate(self, tokenizer: PreTrainedTokenizerBase) -> Collate:
        return _Collate(tokenizer)

    def logits(self, outputs: Any) -> Tensor:
        """(batch, seq, 2): the start and the end logits side by side."""
        return torch.stack([outputs.start_logits, outputs.end_logits], dim=-1)

    def targets(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.stack([batch["start_positions"], batch["end_positions"]], dim=-1)

    def distill_loss(self, student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
        return distill_loss(student, teacher, labels, cfg)

    @torch.inference_mode()
    def predict(self, model: nn.Module, data: QAEncoded, tokenizer: PreTrainedTokenizerBase,
                batch_size: int = 64, desc: str | bool | None = None) -> np.ndarray:
        """(windows, longest window, 2) start/end logits; positions past a window's end hold -1e4."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        width = max((len(f["input_ids"]) for f in data.features), default=1)
        out = np.full((len(data), width, 2), -1e4, dtype=np.float32)
        pad = DataCollatorWithPadding(tokenizer)
        for idx in length_sorted_batches(data, batch_size):
            batch = pad([data.features[i] for i in idx])
            res = model(**{k: v.to(device) for k, v in batch.items()})
            both = self.logits(res).float().cpu().numpy()
            for row, i in enumerate(idx):
                n = len(data.features[i]["input_ids"])
                out[i, :n] = both[row, :n]
        model.train(was_training)
        return out

    def evaluate(self, model: nn.Module, data: QAEncoded, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 64, desc: str | bool | None = None) -> tuple[dict[str, float], np.ndarray]:
        logits = self.predict(model, data, tokenizer, batch_size, desc)
        answers = decode(data, logits, data.max_answer_length)
        metrics = squad_metrics(answers, [[t for t, _ in e.answers] for e in data.examples])
        labels = np.asarray(data.labels, dtype=np.int64)
        lp = torch.log_softmax(torch.from_numpy(logits), dim=1)
        rows = torch.arange(len(labels))
        nll = -(lp[rows, labels[:, 0], 0] + lp[rows, labels[:, 1], 1]) / 2 if len(labels) else torch.zeros(1)
        metrics["loss"] = float(nll.mean())
        return metrics, logits

    def same_predictions(self, a: np.ndarray, b: np.ndarray) -> bool:
        """The same start and end token in every window (hence the same spans)."""
        return a.shape == b.shape and bool((a.argmax(1) == b.argmax(1)).all())


__all__ = ["QAEncoded", "QuestionAnsweringTask", "best_span", "decode", "distill_loss", "encode_windows"]

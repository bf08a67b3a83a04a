"""What a task must provide, so that one evaluate → prune → recover → test loop runs it.

A task is what the model is asked to do: how its data is read and tokenised, how examples are batched,
the loss it trains with (and the loss a student learns a teacher's outputs with), its metrics, the head
it needs, and how a saved model is checked to predict what was measured. The loop (:mod:`prunekit.pipeline`)
and recovery training (:mod:`prunekit.train`) ask the task for all of these and never name a task.

The shared text machinery lives here too (:class:`EncodedSplit` and the functions below it): tokenise each
split once, batch with little padding, predict in length-sorted batches. Every text task whose examples
are "some texts → one label (a class id or a number)" uses it as it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

from prunekit.data.options import DataOptions
from prunekit.errors import PrunekitError

Collate = Callable[[list[dict]], dict[str, Tensor]]


class TaskSplit(Protocol):
    """One split of a task's data: texts (one tuple entry per text column) and one label per example."""

    texts: list[tuple[str, ...]]
    labels: Sequence[Any]

    def __len__(self) -> int: ...

    def subset(self, n: int, seed: int = 0) -> TaskSplit: ...


class TaskData(Protocol):
    """What :meth:`Task.load_data` returns: three splits and where they came from (for the report)."""

    train: TaskSplit
    validation: TaskSplit
    test: TaskSplit
    text_columns: tuple[str, ...]
    label_column: str
    label_names: list[str]  # what the model's outputs are named (a classifier's classes, a regressor's target)
    source: str


@dataclass
class EncodedSplit(Dataset):
    """Token ids of one split (unpadded) plus labels; padding happens per batch."""

    features: list[dict[str, list[int]]]
    labels: list[Any]  # class ids (classification), numbers (regression)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**self.features[i], "labels": self.labels[i]}


def encode(split: TaskSplit, tokenizer: PreTrainedTokenizerBase, max_length: int) -> EncodedSplit:
    columns = list(zip(*split.texts, strict=True)) if split.texts else [[]]
    enc = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length)
    keys = [k for k in enc if k in tokenizer.model_input_names]
    features = [{k: enc[k][i] for k in keys} for i in range(len(split))]
    return EncodedSplit(features, list(split.labels))


def make_loader(
    data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int, *, shuffle: bool, seed: int = 0,
    collate: Collate | None = None,
) -> DataLoader:
    """Training order: shuffled, but grouped by length (as HF's ``group_by_length``) so batches carry
    little padding: on short texts this roughly halves the cost of an epoch on CPU."""
    collate = collate or DataCollatorWithPadding(tokenizer)
    if not shuffle:
        return DataLoader(data, batch_size=batch_size, collate_fn=collate)
    gen = torch.Generator().manual_seed(seed)
    lengths = [len(next(iter(f.values()))) for f in data.features]
    sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=gen)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=collate)


def calibration_loader(data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                       seed: int = 0, collate: Collate | None = None) -> DataLoader:
    """The seeded order every calibration pass walks (criteria, group scores, SparseGPT's windows), so
    all methods calibrate on the same training examples."""
    return make_loader(data, tokenizer, batch_size, shuffle=True, seed=seed + 7919, collate=collate)


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


def length_sorted_batches(data: EncodedSplit, batch_size: int) -> Iterator[list[int]]:
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
    collate: Collate | None = None,
) -> np.ndarray:
    """Logits for every example, in the split's order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = collate or DataCollatorWithPadding(tokenizer)
    logits = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    batches = list(length_sorted_batches(data, batch_size))
    for idx in tqdm(batches, desc=desc or "evaluate", leave=False, disable=desc is False):
        batch = collate([data.features[i] for i in idx])
        out = model(**{k: v.to(device) for k, v in batch.items()})
        logits[idx] = out.logits.float().cpu().numpy()
    model.train(was_training)
    return logits


def latency_inputs(tokenizer: PreTrainedTokenizerBase, vocab_size: int, device: torch.device | str):
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


class Task(ABC):
    """What a task must provide.

    Class attributes:

    - ``name``: the task's registry name (``--task``), e.g. ``"classification"``.
    - ``head``: the key of :data:`prunekit.io.hf.TASK_HEADS` naming the model heads the task starts from;
      a checkpoint with any other head is refused before its weights load.
    - ``metric``: the primary key of the metrics dict :meth:`evaluate` returns; ``--max-drop`` and the
      logs follow it.
    - ``higher_is_better``: the metric's direction (accuracy: True; an error such as MAE: False).
    - ``metric_scale``: how the metric is shown and how ``--max-drop`` counts it: 100 for metrics in
      [0, 1] (``--max-drop 2`` is two points), 1 for metrics read as they are.
    - ``metric_unit``: the unit shown after a scaled value (``" %"`` for accuracy, ``""`` otherwise).
    - ``reload_class``: the plain transformers ``AutoModelFor…`` class a saved folder must load with
      (the save step's reload check).
    - ``needs_teacher``: the task learns only from the unpruned model (no labels: embeddings), so recovery
      always distils and ``finetune`` is refused.

    Methods without a body here (:meth:`load_data`, :meth:`load_model`, :meth:`evaluate`,
    :meth:`distill_loss`, :meth:`same_predictions`) are what a task must write; the others have
    defaults for tasks whose examples are texts with one label each, batched with padding.
    """

    name: ClassVar[str]
    head: ClassVar[str]
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    metric_scale: ClassVar[float] = 100.0
    metric_unit: ClassVar[str] = ""
    reload_class: ClassVar[type]
    needs_teacher: ClassVar[bool] = False

    # -- data and model ---------------------------------------------------------------------------------

    @abstractmethod
    def load_data(self, data: DataOptions) -> TaskData:
        """The train / validation / test splits ``data`` names (before any ``max_*_samples`` cap)."""

    @abstractmethod
    def load_model(self, spec: str, data: TaskData, trust_remote_code: bool = False, module: str | None = None,
                   module_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, PreTrainedTokenizerBase, bool]:
        """The model ``spec`` names with the head this task needs, its tokenizer, and whether the head is
        new (the loop then trains it before measuring a baseline). ``data`` sizes a new head."""

    def new_model(self, opts: Any, data: TaskData) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        """A freshly initialised small model (``--arch``: LSTM/GRU/RNN, TextCNN, a user's module) and its
        tokenizer. Default: refused, the task starts from a pretrained ``--model``."""
        raise PrunekitError(f"--arch builds a new classifier; the {self.name} task starts from a --model")

    def align(self, data: TaskData, model: nn.Module, spec: str) -> tuple[TaskData, list[str]]:
        """The data as the loaded (trained) model reads it, and notes on any decision that took: e.g. a
        classifier's label ids follow the model's ``id2label``. Default: the data as it is."""
        return data, []

    def summary(self, data: TaskData) -> str:
        """A few words on what the model predicts, for the log line when a run opens."""
        return self.name

    def describe(self, data: TaskData) -> dict[str, dict[str, Any]]:
        """Task-specific entries of the report's ``model`` and ``data`` sections."""
        return {"model": {"labels": data.label_names},
                "data": {"text_columns": list(data.text_columns), "label_column": data.label_column}}

    # -- batches ----------------------------------------------------------------------------------------

    def encode(self, split: TaskSplit, tokenizer: PreTrainedTokenizerBase, max_length: int) -> EncodedSplit:
        """Tokenise a split once; padding happens per batch (:meth:`collate`)."""
        return encode(split, tokenizer, max_length)

    def collate(self, tokenizer: PreTrainedTokenizerBase) -> Collate:
        """Examples → one padded batch of tensors (labels included)."""
        return DataCollatorWithPadding(tokenizer)

    def loader(self, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int, *,
               shuffle: bool, seed: int = 0) -> DataLoader:
        """Training batches: see :func:`make_loader`."""
        return make_loader(data, tokenizer, batch_size, shuffle=shuffle, seed=seed, collate=self.collate(tokenizer))

    def calibration_loader(self, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                           seed: int = 0) -> DataLoader:
        """The batches every criterion calibrates on: see :func:`calibration_loader`."""
        return calibration_loader(data, tokenizer, batch_size, seed, collate=self.collate(tokenizer))

    def calibration_windows(self, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batches: int,
                            batch_size: int, seed: int = 0) -> dict[str, Tensor]:
        """Padding-free calibration inputs for one-shot solvers (SparseGPT): see :func:`packed_windows`."""
        return packed_windows(data, tokenizer, batches, batch_size, seed)

    def latency_inputs(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, device: torch.device | str):
        """A ``make_inputs(batch, seq_len)`` the latency timer feeds the model with."""
        return latency_inputs(tokenizer, vocab_size, device)

    def progress_bar(self, data: EncodedSplit, batch_size: int) -> dict[str, Any]:
        """What the training progress bar counts (tqdm keyword arguments): by default steps; a language
        model counts tokens (``unit_scale`` = tokens per batch), the unit its budgets are given in."""
        return {}

    # -- training ---------------------------------------------------------------------------------------

    def check_training(self, data: TaskData) -> dict[str, Any]:
        """Before any training: refuse training data that leaks into what is measured; facts for the report's
        training record. Default: nothing to check (the data's own splits are trusted); an LM measures how
        much of its evaluation text the training text contains."""
        return {}

    def loss(self, outputs: Any, batch: dict[str, Tensor]) -> Tensor:
        """The training loss of one batch's forward pass. Default: the loss the model computed itself."""
        return outputs.loss

    def logits(self, outputs: Any) -> Tensor:
        """What :meth:`distill_loss` compares from a forward pass. Default: ``outputs.logits``."""
        return outputs.logits

    def targets(self, batch: dict[str, Tensor]) -> Tensor:
        """The labels :meth:`distill_loss` gets from a batch. Default: ``batch["labels"]``."""
        return batch["labels"]

    @abstractmethod
    def distill_loss(self, student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
        """The loss of a student's outputs given the teacher's and the labels (``cfg``: a
        :class:`~prunekit.train.distill.DistillConfig`, whose ``alpha`` weighs the labels' term)."""

    # -- measuring and saving ---------------------------------------------------------------------------

    def predict(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                batch_size: int = 64, desc: str | bool | None = None) -> np.ndarray:
        """The model's raw outputs (logits) for every example, in the split's order."""
        return predict(model, data, tokenizer, batch_size, desc, collate=self.collate(tokenizer))

    @abstractmethod
    def evaluate(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 64, desc: str | bool | None = None) -> tuple[dict[str, float], np.ndarray]:
        """The metrics (``metric`` among them) and the outputs they came from (:meth:`predict`)."""

    @abstractmethod
    def same_predictions(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Do two sets of outputs (:meth:`predict`) make the same predictions? The reload check asks it."""

    def save_files(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> dict[str, Any]:
        """Write what the task's own loader needs beside the saved model (a sentence-transformers pipeline)
        and check it; returns entries for the report's ``reload_check``. Default: nothing."""
        return {}

    # -- derived ----------------------------------------------------------------------------------------

    def show(self, value: float) -> str:
        """A metric value as logs and reports print it: scaled, with its unit."""
        return f"{self.metric_scale * value:.2f}{self.metric_unit}"

    def worse_by(self, before: float, after: float) -> float:
        """How much worse ``after`` is than ``before`` on :attr:`metric`, in scaled units (what
        ``--max-drop`` limits); negative when it is better."""
        drop = self.metric_scale * (before - after)
        return drop if self.higher_is_better else -drop

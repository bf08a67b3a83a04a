"""Causal language modelling as a task of the loop: windows of text, next-token loss, perplexity.

Training text (calibration and recovery) and evaluation text never overlap. A corpus with its own
``calibration.txt`` and ``evaluation.txt`` (the built-in ``wikipedia``) uses them as they are; any other
corpus is tokenised as one stream and cut in two: calibration windows are sampled (seeded) from the first
half, evaluation windows are fixed, evenly spaced, non-overlapping windows of the second half.

:class:`LMTask` serves the loop: its training split is the first half cut into non-overlapping windows
(recovery trains on them), its validation split the last few of those windows (held out from recovery),
its test split the evaluation windows, and its metric the perplexity :func:`perplexity` has always given.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from prunekit.assets import resolve_data
from prunekit.data.options import DataOptions
from prunekit.data.text import read_texts
from prunekit.errors import PrunekitError
from prunekit.io.hf import load_causal_lm
from prunekit.report.measure import model_device
from prunekit.tasks.base import Collate, EncodedSplit, Task


@dataclass
class LMText:
    """Token streams of a corpus, already split into a calibration and an evaluation part."""

    calibration: torch.Tensor  # 1-D token ids
    evaluation: torch.Tensor
    source: str
    split_rule: str


def _token_stream(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        if eos is not None:
            ids.append(eos)  # documents are separated like in pre-training
    return torch.tensor(ids, dtype=torch.long)


def _paragraphs(path: Path) -> list[str]:
    return [p.strip() for p in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if p.strip()]


def load_lm_text(tokenizer: PreTrainedTokenizerBase, data: str, calib_data: str | None = None) -> LMText:
    """Tokenise ``data`` (and ``calib_data`` if given) into disjoint calibration/evaluation streams."""
    folder = Path(resolve_data(data)).expanduser()
    if calib_data is not None:
        calib = _token_stream(tokenizer, read_texts(calib_data))
        evaluation = _token_stream(tokenizer, read_texts(data))
        rule = f"calibration from {calib_data!r}, evaluation from {data!r}"
    elif folder.is_dir() and (folder / "calibration.txt").is_file() and (folder / "evaluation.txt").is_file():
        calib = _token_stream(tokenizer, _paragraphs(folder / "calibration.txt"))
        evaluation = _token_stream(tokenizer, _paragraphs(folder / "evaluation.txt"))
        rule = "the corpus's own calibration.txt / evaluation.txt (disjoint articles)"
    else:
        stream = _token_stream(tokenizer, read_texts(data))
        half = len(stream) // 2
        calib, evaluation = stream[:half], stream[half:]
        rule = "first half of the token stream for calibration, second half for evaluation"
    return LMText(calibration=calib, evaluation=evaluation, source=data, split_rule=rule)


def _need(stream: torch.Tensor, seq_len: int, what: str) -> None:
    if seq_len < 2:
        raise PrunekitError(f"--seq-len must be at least 2, got {seq_len}")
    if len(stream) < seq_len:
        raise PrunekitError(f"the {what} text has {len(stream)} tokens, shorter than one window of {seq_len}")


def calibration_windows(text: LMText, n: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``n`` windows of ``seq_len`` tokens at seeded random offsets of the calibration stream, shape (n, seq_len)."""
    _need(text.calibration, seq_len, "calibration")
    if n < 1:
        raise PrunekitError(f"--calib-samples must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(text.calibration) - seq_len + 1, size=n)
    return torch.stack([text.calibration[s : s + seq_len] for s in starts])


def evaluation_windows(text: LMText, seq_len: int, n: int | None = None, stride: int | None = None) -> torch.Tensor:
    """Fixed windows of the evaluation stream, shape (k, seq_len).

    Without ``stride``: non-overlapping windows; ``n`` of them evenly spaced over the whole stream
    (all if ``n`` is None or 0). With ``stride`` < ``seq_len``: sliding windows starting every
    ``stride`` tokens (see :func:`perplexity`, which scores each token once).
    """
    _need(text.evaluation, seq_len, "evaluation")
    step = stride or seq_len
    if step < 1 or step > seq_len:
        raise PrunekitError(f"--stride must be in [1, seq_len={seq_len}], got {stride}")
    starts = list(range(0, len(text.evaluation) - seq_len + 1, step))
    if n and n < len(starts):
        # sliding windows must stay contiguous; non-overlapping ones spread over the whole text
        starts = starts[:n] if stride else [starts[i] for i in np.linspace(0, len(starts) - 1, n).round().astype(int)]
    return torch.stack([text.evaluation[s : s + seq_len] for s in starts])


def training_windows(text: LMText, seq_len: int) -> torch.Tensor:
    """The training (calibration) stream cut into consecutive non-overlapping windows: what recovery
    trains on, shape (k, seq_len)."""
    _need(text.calibration, seq_len, "training")
    k = len(text.calibration) // seq_len
    return text.calibration[: k * seq_len].reshape(k, seq_len)


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, stride: int | None = None, batch_size: int = 1,
               outputs: list[np.ndarray] | None = None) -> dict:
    """Perplexity over ``windows`` (from :func:`evaluation_windows`): exp(mean token NLL).

    With a stride, window ``i > 0`` overlaps the previous one and only its last ``stride`` tokens
    are scored, each with up to ``seq_len`` tokens of context (the usual sliding-window evaluation).
    ``outputs``, if given, receives per batch what :meth:`LMTask.predict` returns (the same pass).
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    seq_len = windows.shape[1]
    nll, count = 0.0, 0
    start = time.perf_counter()
    for i in range(0, len(windows), batch_size):
        ids = windows[i : i + batch_size].to(device)
        labels = ids.clone()
        if stride and stride < seq_len:
            for j in range(len(ids)):
                if i + j > 0:
                    labels[j, : seq_len - stride] = -100
        logits = model(input_ids=ids).logits.float()
        shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
        loss = nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
        nll += float(loss)
        count += int((shift_labels != -100).sum())
        if outputs is not None:
            outputs.append(_token_outputs(logits, ids))
    model.train(was_training)
    mean = nll / max(count, 1)
    return {"perplexity": math.exp(mean), "loss": mean, "tokens": count, "windows": len(windows),
            "seconds": time.perf_counter() - start}


def _token_outputs(logits: Tensor, ids: Tensor) -> np.ndarray:
    """(batch, seq_len - 1, 2): each next token's log-probability and the greedy token id, a compact
    stand-in for the logits (a window's full logits are seq_len × vocabulary floats)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    target = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return torch.stack([target, logp.argmax(-1).float()], dim=-1).cpu().numpy()


# ---------------------------------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------------------------------

#: Windows of n tokens shared by the training and evaluation text (the overlap check): long enough that
#: formulaic text (dates, list markup) does not count, short enough to catch a copied paragraph.
OVERLAP_NGRAM = 32
#: Largest share of evaluation windows of OVERLAP_NGRAM tokens that may also occur in the training text.
OVERLAP_LIMIT = 0.01


def _ngram_hashes(ids: Tensor, n: int) -> np.ndarray:
    """A 64-bit rolling hash of every run of ``n`` tokens (wrapping arithmetic; collisions ~2⁻⁶⁴)."""
    a = ids.numpy().astype(np.uint64)
    if len(a) < n:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(len(a) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * np.uint64(1_000_003) + a[j : j + len(h)] + np.uint64(1)
    return h


def overlap(training: Tensor, evaluation: Tensor, n: int = OVERLAP_NGRAM) -> float:
    """The share of the evaluation text's runs of ``n`` tokens that also occur in the training text."""
    ev = _ngram_hashes(evaluation, n)
    return float(np.isin(ev, _ngram_hashes(training, n)).mean()) if len(ev) else 0.0


def check_disjoint(text: LMText) -> float:
    """Refuse training (recovery) text that overlaps the evaluation text; the measured overlap."""
    shared = overlap(text.calibration, text.evaluation)
    if shared > OVERLAP_LIMIT:
        raise PrunekitError(f"the training text overlaps the evaluation text: {100 * shared:.1f} % of the evaluation "
                            f"text's {OVERLAP_NGRAM}-token runs also occur in it ({text.split_rule}); give "
                            "--calib-data text disjoint from --data")
    return shared


@dataclass
class LMWindows(EncodedSplit):
    """Fixed-length token windows of one part of the text (an :class:`EncodedSplit` with one
    ``input_ids`` feature per window), with the text they came from and the stride they are scored with."""

    text: LMText | None = None
    stride: int | None = None

    @classmethod
    def of(cls, windows: Tensor, text: LMText | None = None, stride: int | None = None) -> LMWindows:
        rows = windows.tolist()
        return cls([{"input_ids": r} for r in rows], [0] * len(rows), text, stride)

    @property
    def ids(self) -> Tensor:
        return torch.tensor([f["input_ids"] for f in self.features], dtype=torch.long)

    @property
    def tokens(self) -> int:
        return sum(len(f["input_ids"]) for f in self.features)


@dataclass
class LMPart:
    """One split of :class:`LMData` before tokenisation (the split rule cuts the token stream, so a part
    is known only once a tokenizer reads the corpus): which part, capped at ``limit`` windows."""

    corpus: LMData
    part: str  # train | validation | test
    limit: int | None = None
    texts: list[tuple[str, ...]] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        windows = self.corpus.windows.get(self.part)
        if windows is None:
            raise PrunekitError(f"the LM {self.part} split is known once the text is tokenised (LMTask.encode)")
        return len(windows)

    def subset(self, n: int, seed: int = 0) -> LMPart:
        return replace(self, limit=n)


@dataclass
class LMData:
    """What :meth:`LMTask.load_data` returns: the corpus named, read and split once a tokenizer is known."""

    source: str
    calib_data: str | None = None
    text_columns: tuple[str, ...] = ()
    label_column: str = ""
    label_names: list[str] = field(default_factory=list)
    text: LMText | None = None
    windows: dict[str, LMWindows] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train, self.validation, self.test = (LMPart(self, p) for p in ("train", "validation", "test"))


def epochs_for_tokens(tokens: int, train: LMWindows) -> tuple[float, str | None]:
    """--finetune-tokens as epochs of the training windows, and a note when the text must repeat."""
    if tokens < 1:
        raise PrunekitError(f"--finetune-tokens must be at least 1, got {tokens}")
    epochs = tokens / max(1, train.tokens)
    if epochs <= 1:
        return epochs, None
    return epochs, (f"recovery: {tokens:,} tokens asked, the training text gives {train.tokens:,} "
                    f"({len(train)} windows): it repeats for {epochs:.2f} epochs")


def tokens_seen(steps: int, train: LMWindows, batch_size: int) -> int:
    """How many tokens ``steps`` training batches of ``batch_size`` windows covered (an epoch's last batch
    may be short)."""
    per_epoch = max(1, math.ceil(len(train) / batch_size))
    epochs, rest = divmod(steps, per_epoch)
    width = len(train.features[0]["input_ids"]) if train.features else 0
    return (epochs * len(train) + min(rest * batch_size, len(train))) * width


def lm_distill_loss(student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
    """α·CE(next token) + (1 − α)·T²·KL(teacher_T ‖ student_T) over every position (Minitron recovers
    pruned LMs with the KL term alone: α = 0)."""
    t = cfg.temperature
    s, te = student[:, :-1].float(), teacher[:, :-1].float()
    s, te = s.reshape(-1, s.shape[-1]), te.reshape(-1, te.shape[-1])
    soft = F.kl_div(F.log_softmax(s / t, dim=-1), F.log_softmax(te / t, dim=-1), log_target=True,
                    reduction="batchmean")
    if cfg.alpha == 0:
        return t * t * soft
    hard = F.cross_entropy(s, labels[:, 1:].reshape(-1), ignore_index=-100)
    return cfg.alpha * hard + (1.0 - cfg.alpha) * t * t * soft


def _collate(features: list[dict]) -> dict[str, Tensor]:
    ids = torch.tensor([f["input_ids"] for f in features], dtype=torch.long)
    return {"input_ids": ids, "labels": ids.clone()}  # the model shifts the labels itself


@dataclass(eq=False)
class LMTask(Task):
    """A causal LM on plain text: windows of ``seq_len`` tokens, next-token loss, perplexity (lower is
    better). The fields are the window settings (``--seq-len``, ``--eval-samples``, ``--stride``,
    ``--calib-data``) and how many training windows are held out as the validation split."""

    seq_len: int = 512
    eval_samples: int | None = 32
    stride: int | None = None
    calib_data: str | None = None
    val_windows: int = 4

    name = "lm"
    head = "lm"
    metric = "perplexity"
    higher_is_better = False
    metric_scale = 1.0
    metric_unit = ""
    reload_class = AutoModelForCausalLM

    def load_data(self, data: DataOptions) -> LMData:
        return LMData(data.data, self.calib_data)

    def load_model(self, spec: str, data: LMData, trust_remote_code: bool = False, module: str | None = None,
                   module_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, PreTrainedTokenizerBase, bool]:
        if module is not None or module_kwargs is not None:
            raise PrunekitError("--task lm runs on transformers causal LMs; --module is for classifiers")
        model, tokenizer = load_causal_lm(spec, trust_remote_code)
        return model, tokenizer, False

    def read(self, tokenizer: PreTrainedTokenizerBase, data: LMData) -> dict[str, LMWindows]:
        """Tokenise the corpus once and cut it into the three splits (see the module's docstring)."""
        if data.text is None:
            data.text = text = load_lm_text(tokenizer, data.source, data.calib_data)
            train = training_windows(text, self.seq_len)
            if len(train) <= self.val_windows:
                raise PrunekitError(f"the training text has {len(train)} windows of {self.seq_len} tokens; the loop "
                                    f"needs more than the {self.val_windows} it holds out for validation")
            data.windows = {
                "train": LMWindows.of(train[: len(train) - self.val_windows], text),
                "validation": LMWindows.of(train[len(train) - self.val_windows :], text),
                "test": LMWindows.of(evaluation_windows(text, self.seq_len, self.eval_samples, self.stride), text,
                                     self.stride),
            }
        return data.windows

    def encode(self, split: LMPart, tokenizer: PreTrainedTokenizerBase, max_length: int) -> LMWindows:
        windows = self.read(tokenizer, split.corpus)[split.part]
        if split.limit and split.limit < len(windows):
            windows = LMWindows(windows.features[: split.limit], windows.labels[: split.limit], windows.text,
                                windows.stride)
            split.corpus.windows[split.part] = windows
        return windows

    def summary(self, data: LMData) -> str:
        return f"causal LM, {self.seq_len}-token windows"

    def describe(self, data: LMData) -> dict[str, dict[str, Any]]:
        text = data.text
        return {"model": {}, "data": {
            "calibration_data": data.calib_data, "split_rule": text.split_rule if text else None,
            "calibration_tokens_available": len(text.calibration) if text else None,
            "evaluation_tokens_available": len(text.evaluation) if text else None,
            "seq_len": self.seq_len, "stride": self.stride or self.seq_len}}

    def collate(self, tokenizer: PreTrainedTokenizerBase) -> Collate:
        return _collate

    def calibration_windows(self, data: LMWindows, tokenizer: PreTrainedTokenizerBase, batches: int,
                            batch_size: int, seed: int = 0) -> dict[str, Tensor]:
        """Today's LM calibration windows: seeded random offsets of the whole training stream."""
        if data.text is None:
            return super().calibration_windows(data, tokenizer, batches, batch_size, seed)
        return {"input_ids": calibration_windows(data.text, batches * batch_size, self.seq_len, seed)}

    def progress_bar(self, data: EncodedSplit, batch_size: int) -> dict[str, Any]:
        width = len(data.features[0]["input_ids"]) if data.features else 1
        return {"unit": "tok", "unit_scale": batch_size * width}

    def check_training(self, data: LMData) -> dict[str, Any]:
        """The training text may not overlap the evaluation text (:func:`check_disjoint`)."""
        return {"overlap": check_disjoint(data.text)} if data.text is not None else {}

    def distill_loss(self, student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
        return lm_distill_loss(student, teacher, labels, cfg)

    def predict(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                batch_size: int = 64, desc: str | bool | None = None) -> np.ndarray:
        return self.evaluate(model, data, tokenizer, batch_size, desc)[1]

    def evaluate(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 64, desc: str | bool | None = None) -> tuple[dict[str, float], np.ndarray]:
        """:func:`perplexity` (one window at a time, as the LM path has always measured it) and per token
        the next token's log-probability and the greedy token (:meth:`same_predictions` compares them)."""
        outputs: list[np.ndarray] = []
        ids = data.ids if isinstance(data, LMWindows) else torch.tensor([f["input_ids"] for f in data.features])
        result = perplexity(model, ids, getattr(data, "stride", None), outputs=outputs)
        return result, np.concatenate(outputs) if outputs else np.zeros((0, 0, 2), dtype=np.float32)

    def same_predictions(self, a: np.ndarray, b: np.ndarray) -> bool:
        """The same greedy tokens everywhere and the same log-probabilities up to float noise."""
        return a.shape == b.shape and bool((a[..., 1] == b[..., 1]).all()) and bool(
            np.allclose(a[..., 0], b[..., 0], rtol=0.0, atol=1e-4))

"""Causal language modelling: calibration windows, evaluation windows and perplexity.

Calibration and evaluation text never overlap. A corpus with its own ``calibration.txt`` and
``evaluation.txt`` (the built-in ``wikipedia``) uses them as they are; any other corpus is tokenised
as one stream and cut in two: calibration windows are sampled (seeded) from the first half,
evaluation windows are fixed, evenly spaced, non-overlapping windows of the second half.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from prunekit.assets import resolve_data
from prunekit.data.text import read_texts
from prunekit.errors import PrunekitError
from prunekit.report.measure import model_device


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


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, stride: int | None = None, batch_size: int = 1) -> dict:
    """Perplexity over ``windows`` (from :func:`evaluation_windows`): exp(mean token NLL).

    With a stride, window ``i > 0`` overlaps the previous one and only its last ``stride`` tokens
    are scored, each with up to ``seq_len`` tokens of context (the usual sliding-window evaluation).
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
    model.train(was_training)
    mean = nll / max(count, 1)
    return {"perplexity": math.exp(mean), "loss": mean, "tokens": count, "windows": len(windows),
            "seconds": time.perf_counter() - start}

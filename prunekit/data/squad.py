"""Extractive question-answering data in SQuAD's shape: context, question, answers (text + character start).

Reads SQuAD's nested JSON (``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}``), flat JSONL/CSV rows
and ``datasets`` folders through the table readers classification uses. Sets that carry answer texts only
(the built-in ``squad`` asset) get their offsets by searching the context: first occurrence, case-sensitive,
then case-insensitive. An answer found nowhere is never dropped silently: a training question without any
locatable answer is skipped and counted, an evaluation question keeps its gold texts; both counts go to the
data notes of the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prunekit.assets import resolve_data
from prunekit.data.classification import read_tables
from prunekit.errors import PrunekitError

QUESTION_COLUMNS = ("question", "query")
CONTEXT_COLUMNS = ("context", "passage", "story")
ANSWER_COLUMNS = ("answers", "answer", "answer_text")


@dataclass
class QAExample:
    """One question over one context; ``answers`` are (text, start) pairs, start -1 when not found."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]


@dataclass
class QASplit:
    """The examples of one split (``texts``/``labels`` satisfy the task protocol: (question, context) and
    the answers)."""

    examples: list[QAExample]
    doc_stride: int = 128  # tokens consecutive windows share (0: no windows, a long context is refused)
    max_answer_length: int = 30  # longest answer span predicted, in tokens

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def texts(self) -> list[tuple[str, ...]]:
        return [(e.question, e.context) for e in self.examples]

    @property
    def labels(self) -> list[list[tuple[str, int]]]:
        return [e.answers for e in self.examples]

    def subset(self, n: int, seed: int = 0) -> QASplit:
        if n <= 0:
            raise PrunekitError(f"subset size must be positive, got {n}")
        if n >= len(self):
            return self
        taken = sorted(np.random.default_rng(seed).choice(len(self), n, replace=False).tolist())
        return QASplit([self.examples[i] for i in taken], self.doc_stride, self.max_answer_length)


@dataclass
class QAData:
    train: QASplit
    validation: QASplit
    test: QASplit
    source: str
    notes: list[str] = field(default_factory=list)
    text_columns: tuple[str, ...] = ("question", "context")
    label_column: str = "answers"
    label_names: list[str] = field(default_factory=lambda: ["start", "end"])

    @property
    def splits(self) -> dict[str, QASplit]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def find_answer(context: str, text: str) -> int:
    """The answer's character start in ``context``: first exact occurrence, else first case-insensitive
    one, else -1."""
    start = context.find(text)
    if start < 0:
        start = context.lower().find(text.lower())
    return start


def _answers(value: Any, context: str) -> list[tuple[str, int]]:
    """Answers in any of SQuAD's spellings: ``{"text": [...], "answer_start": [...]}`` (datasets), a list of
    ``{"text", "answer_start"}`` (SQuAD JSON), a list of texts, or one text. Offsets that do not point at
    their text are searched for again."""
    if isinstance(value, dict):
        texts, starts = value.get("text", []), value.get("answer_start", [])
        if isinstance(texts, str):
            texts, starts = [texts], [starts]
        pairs = list(zip(list(texts), list(starts) + [None] * (len(texts) - len(starts)), strict=False))
    elif isinstance(value, str):
        pairs = [(value, None)]
    else:
        pairs = [(a["text"], a.get("answer_start")) if isinstance(a, dict) else (a, None) for a in list(value)]
    out = []
    for text, start in pairs:
        text = str(text)
        if start is None or not (int(start) >= 0 and context[int(start): int(start) + len(text)] == text):
            start = find_answer(context, text)
        out.append((text, int(start)))
    return out


def _column(columns: Sequence[str], names: Sequence[str], what: str, where: str) -> str:
    for name in names:
        if name in columns:
            return name
    raise PrunekitError(f"{where} has no {what} column (looked for {', '.join(names)}; found "
                        f"{', '.join(map(str, columns))})")


def _from_frame(df: pd.DataFrame, where: str) -> list[QAExample]:
    cols = list(df.columns)
    q, c = _column(cols, QUESTION_COLUMNS, "question", where), _column(cols, CONTEXT_COLUMNS, "context", where)
    a = _column(cols, ANSWER_COLUMNS, "answers", where)
    ids = df["id"].astype(str).tolist() if "id" in cols else [str(i) for i in range(len(df))]
    return [QAExample(i, str(qq), str(cc), _answers(aa, str(cc)))
            for i, qq, cc, aa in zip(ids, df[q], df[c], df[a], strict=True)]


def _from_squad_json(obj: dict) -> list[QAExample]:
    out = []
    for article in obj["data"]:
        for para in article.get("paragraphs", []):
            context = para["context"]
            for qa in para.get("qas", []):
                out.append(QAExample(str(qa.get("id", len(out))), qa["question"], context,
                                     _answers(qa.get("answers", []), context)))
    return out


def _is_squad_json(path: Path) -> dict | None:
    if path.suffix != ".json":
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("data"), list) else None


def read_splits(path: Path) -> dict[str, list[QAExample]]:
    """Examples by split name from a file or a folder (SQuAD JSON files named by split, or tables)."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    nested = {f.stem.split("-")[0].lower(): obj for f in files if (obj := _is_squad_json(f)) is not None}
    if nested:
        aliases = {"dev": "validation", "valid": "validation", "val": "validation"}
        return {aliases.get(k, k): _from_squad_json(v) for k, v in nested.items()}
    return {split: _from_frame(df, f"{path} ({split})") for split, df in read_tables(path).items()}


def _split_off(examples: list[QAExample], seed: int) -> dict[str, list[QAExample]]:
    """Seeded 80/10/10 by context, so no passage is seen in training and scored in test."""
    contexts = sorted({e.context for e in examples})
    order = np.random.default_rng(seed).permutation(len(contexts))
    n = len(contexts)
    part = {contexts[j]: ("train" if k < 0.8 * n else "validation" if k < 0.9 * n else "test")
            for k, j in enumerate(order)}
    out: dict[str, list[QAExample]] = {"train": [], "validation": [], "test": []}
    for e in examples:
        out[part[e.context]].append(e)
    return out


def load_squad(spec: str, seed: int = 0, doc_stride: int = 128, max_answer_length: int = 30) -> QAData:
    """The train / validation / test splits at ``spec`` (a built-in name, a file or a folder)."""
    if doc_stride < 0 or max_answer_length < 1:
        raise PrunekitError(f"--doc-stride must be ≥ 0 and --max-answer-length ≥ 1, got {doc_stride} and "
                            f"{max_answer_length}")
    path = Path(resolve_data(spec))
    if not path.exists():
        raise PrunekitError(f"question-answering data {spec!r} not found")
    splits = read_splits(path)
    if "train" not in splits:
        raise PrunekitError(f"{path} has no train split")
    if not {"validation", "test"} <= set(splits):
        splits = {**_split_off(splits["train"], seed), **{k: v for k, v in splits.items() if k != "train"}}
        splits.setdefault("validation", splits.get("test", []))
        splits.setdefault("test", splits["validation"])
    notes = []
    train = [e for e in splits["train"] if any(s >= 0 for _, s in e.answers)]
    if len(train) < len(splits["train"]):
        notes.append(f"train: {len(splits['train']) - len(train)} of {len(splits['train'])} questions skipped "
                     "(no answer found in its context)")
    for name in ("validation", "test"):
        lost = sum(1 for e in splits[name] if not any(s >= 0 for _, s in e.answers))
        if lost:
            notes.append(f"{name}: {lost} of {len(splits[name])} questions have no answer found in their context "
                         "(kept, scored against their gold texts)")
    if not train:
        raise PrunekitError(f"{path}: no training question has an answer found in its context")
    opts = (doc_stride, max_answer_length)
    return QAData(QASplit(train, *opts), QASplit(splits["validation"], *opts), QASplit(splits["test"], *opts),
                  str(path), notes)


__all__ = ["QAData", "QAExample", "QASplit", "find_answer", "load_squad", "read_splits"]

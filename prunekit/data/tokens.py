"""Token-classification data (NER): sentences as word lists with one BIO/IOB2 tag per word.

Read from CoNLL files (word ... tag columns, ``-DOCSTART-`` lines, a blank line between sentences), JSONL or
``datasets`` folders with ``tokens`` + ``tags`` columns (tags as strings, or ids with a label list). Tags are
checked once here so every later step can trust them: I- tags that open an entity are repaired to B- (with one
warning counting them), anything else that is not O/B-X/I-X is refused naming its row.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prunekit.assets import resolve_data
from prunekit.data.classification import read_tables
from prunekit.errors import PrunekitError, shown
from prunekit.splits import held_out_split

#: File suffixes read as CoNLL columns (anything else goes through the table readers).
CONLL_SUFFIXES = (".txt", ".conll", ".iob", ".iob2", ".bio")
TOKEN_COLUMN_DEFAULTS = ("tokens", "words")
TAG_COLUMN_DEFAULTS = ("tags", "ner_tags", "labels", "label")
CONLL_SPLITS = {"train": "train", "valid": "validation", "validation": "validation", "dev": "validation",
                "test": "test"}
#: The label sub-tokens after the first (and special tokens) get: ignored by the loss and the metrics.
IGNORE = -100


@dataclass
class TokenSplit:
    """Sentences (word lists) and their tag ids (indexing ``TokenData.label_names``)."""

    tokens: list[list[str]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, n: int, seed: int = 0) -> TokenSplit:
        """``n`` sentences drawn with a fixed seed (for quick runs), in their original order."""
        if n <= 0:
            raise PrunekitError(f"subset size must be positive, got {n}")
        if n >= len(self):
            return self
        taken = sorted(random.Random(seed).sample(range(len(self)), n))
        return TokenSplit([self.tokens[i] for i in taken], [self.labels[i] for i in taken])


@dataclass
class TokenData:
    """Train / validation / test splits sharing one tag list."""

    train: TokenSplit
    validation: TokenSplit
    test: TokenSplit
    label_names: list[str]
    source: str

    @property
    def splits(self) -> dict[str, TokenSplit]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def text_columns(self) -> tuple[str, ...]:  # what the report names (TaskData)
        return ("tokens",)

    @property
    def label_column(self) -> str:
        return "tags"


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """(words, tags) per sentence: the first column is the word, the last the tag; ``-DOCSTART-`` skipped."""
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        if len(parts) < 2:
            raise PrunekitError(f"{path} line {number}: a CoNLL line needs a word and a tag column, "
                                f"got {shown(line, 40)}")
        words.append(parts[0])
        tags.append(parts[-1])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise PrunekitError(f"{path} holds no sentences")
    return sentences


def repair_bio(tags: list[list[str]], where: str) -> list[list[str]]:
    """The tags in IOB2 form: an I-X that does not continue an X entity becomes B-X (IOB1 data; counted in
    one warning); a tag that is not O, B-X or I-X is refused, naming its sentence."""
    repaired, fixed = [], 0
    for row, sentence in enumerate(tags, 1):
        out, previous = [], "O"
        for tag in sentence:
            if tag != "O" and (len(tag) < 3 or tag[:2] not in ("B-", "I-")):
                raise PrunekitError(f"tag {shown(tag, 30)} in sentence {row} of {where} is not in BIO form "
                                    "(O, B-TYPE or I-TYPE)")
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                tag, fixed = "B-" + tag[2:], fixed + 1
            out.append(tag)
            previous = tag
        repaired.append(out)
    if fixed:
        warnings.warn(f"{where}: repaired {fixed} I- tags that start an entity to B- (IOB1 → IOB2)", stacklevel=3)
    return repaired


def _pick(columns: Sequence[str], named: str | None, defaults: Sequence[str], what: str, where: str) -> str:
    if named is not None:
        if named not in columns:
            raise PrunekitError(f"{where} has no {what} column {named!r} (columns: {', '.join(map(str, columns))})")
        return named
    for name in defaults:
        if name in columns:
            return name
    raise PrunekitError(f"{where} has no {what} column ({' or '.join(defaults)}); columns: "
                        f"{', '.join(map(str, columns))}")


def _sequence(value: object) -> list | None:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return None
    return list(value)  # type: ignore[call-overload]


def _table_rows(df: pd.DataFrame, token_column: str | None, tag_column: str | None, label_names: Sequence[str] | None,
                where: str) -> list[tuple[list[str], list[str]]]:
    words_col = _pick(list(df.columns), token_column, TOKEN_COLUMN_DEFAULTS, "token", where)
    tags_col = _pick(list(df.columns), tag_column, TAG_COLUMN_DEFAULTS, "tag", where)
    rows = []
    for row, (words, tags) in enumerate(zip(df[words_col], df[tags_col], strict=True), 1):
        words, tags = _sequence(words), _sequence(tags)
        if tags is None:
            raise PrunekitError(f"tag column {tags_col!r} in {where} must hold a tag sequence per row: row {row} "
                                f"holds {shown(df[tags_col].iloc[row - 1], 40)}")
        if words is None:
            raise PrunekitError(f"token column {words_col!r} in {where} must hold a word list per row: row {row} "
                                "does not")
        if len(words) != len(tags):
            raise PrunekitError(f"row {row} of {where} has {len(words)} tokens but {len(tags)} tags")
        rows.append(([str(w) for w in words], [_tag_name(t, label_names, row, where) for t in tags]))
    return rows


def _tag_name(tag: object, label_names: Sequence[str] | None, row: int, where: str) -> str:
    if isinstance(tag, str):
        return tag
    if isinstance(tag, bool) or not isinstance(tag, int) and not hasattr(tag, "__index__"):
        raise PrunekitError(f"row {row} of {where} holds the tag {shown(tag, 30)}: tags are strings or ids")
    if label_names is None:
        raise PrunekitError(f"{where} gives tags as ids: name them with a label list (the datasets ClassLabel "
                            "feature or label_names)")
    index = int(tag)  # type: ignore[call-overload]
    if not 0 <= index < len(label_names):
        raise PrunekitError(f"row {row} of {where} holds tag id {index}, outside the {len(label_names)} labels")
    return label_names[index]


def _saved_label_names(path: Path, tag_column: str | None) -> list[str] | None:
    """The tag names of a ``datasets`` folder's Sequence(ClassLabel) column, if it has one."""
    try:
        import datasets
        loaded = datasets.load_from_disk(str(path))
    except Exception:  # not a saved dataset, or unreadable: read_tables reports it
        return None
    ds = loaded if isinstance(loaded, datasets.Dataset) else next(iter(loaded.values()))
    for name in ([tag_column] if tag_column else TAG_COLUMN_DEFAULTS):
        feature = ds.features.get(name)
        inner = getattr(feature, "feature", None)
        if isinstance(inner, datasets.ClassLabel):
            return list(inner.names)
    return None


def _read_sources(path: Path, token_column: str | None, tag_column: str | None,
                  label_names: Sequence[str] | None) -> dict[str, list[tuple[list[str], list[str]]]]:
    if path.is_file() and path.suffix.lower() in CONLL_SUFFIXES:
        return {"train": read_conll(path)}
    if path.is_dir():
        conll = {CONLL_SPLITS[f.stem.lower()]: f for f in sorted(path.iterdir())
                 if f.is_file() and f.suffix.lower() in CONLL_SUFFIXES and f.stem.lower() in CONLL_SPLITS}
        if conll:
            return {split: read_conll(f) for split, f in conll.items()}
        label_names = label_names or _saved_label_names(path, tag_column)
    return {split: _table_rows(df, token_column, tag_column, label_names, f"{path} ({split})")
            for split, df in read_tables(path).items()}


def load_tokens(spec: str, token_column: str | None = None, tag_column: str | None = None,
                label_names: Sequence[str] | None = None, split_seed: int = 0) -> TokenData:
    """Tagged sentences from a CoNLL file or folder (train/valid/test.txt), a JSONL file or folder, or a saved
    dataset; tags repaired to IOB2; missing splits carved out of train with the seeded 80/10/10 rule."""
    path = Path(resolve_data(spec)).expanduser()  # a built-in name (conll2003) → its cached folder
    if not path.exists():
        raise PrunekitError(f"no token-classification data at {spec!r}")
    raw = _read_sources(path, token_column, tag_column, label_names)
    rows = {split: list(zip([w for w, _ in r], repair_bio([t for _, t in r], f"{spec} ({split})"), strict=True))
            for split, r in raw.items()}
    if "train" not in rows:
        raise PrunekitError(f"{spec} has no train split")
    names = _ordered_labels({t for r in rows.values() for _, tags in r for t in tags})
    index = {name: i for i, name in enumerate(names)}
    if "validation" not in rows or "test" not in rows:
        train = rows["train"]
        carved = held_out_split(len(train), split_seed, None)
        rows = {**{k: [train[i] for i in idx] for k, idx in carved.items()},
                **{k: v for k, v in rows.items() if k != "train"}}
    splits = {k: TokenSplit([w for w, _ in r], [[index[t] for t in tags] for _, tags in r]) for k, r in rows.items()}
    return TokenData(splits["train"], splits["validation"], splits["test"], names, str(spec))


def _ordered_labels(tags: set[str]) -> list[str]:
    """O first, then each entity type's B- and I- side by side (a stable id order across runs)."""
    types = sorted({t[2:] for t in tags if t != "O"})
    return ["O", *[f"{p}-{t}" for t in types for p in ("B", "I")]]


def align_labels(word_ids: Sequence[int | None], labels: Sequence[int]) -> list[int]:
    """One label per sub-token: the word's tag on its first sub-token, ``IGNORE`` on the rest and on specials
    (so each word is scored once, as seqeval counts words)."""
    out, previous = [], None
    for word in word_ids:
        out.append(IGNORE if word is None or word == previous else labels[word])
        previous = word
    return out


__all__ = ["IGNORE", "TokenData", "TokenSplit", "align_labels", "load_tokens", "read_conll", "repair_bio"]

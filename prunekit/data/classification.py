"""Text-classification data from a built-in name, a table file, a folder of splits or a saved dataset.

Everything ends up as three :class:`Split` objects with integer labels, so training and evaluation
code never cares where the text came from. Splits that a source lacks are carved out of its train
rows with a fixed seeded stratified split, independent of the run seed, so that every run of an
experiment (and every pruning method compared in it) sees the same test set.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import re
import warnings
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.io.common import get_handle

from prunekit.assets import ASSETS, get, resolve_data
from prunekit.errors import PrunekitError, first_line, printable, shown
from prunekit.splits import held_out_size, held_out_split, take

TEXT_COLUMN_DEFAULTS: tuple[tuple[str, ...], ...] = (("text",), ("sentence",), ("sentence1", "sentence2"))
LABEL_COLUMN_DEFAULTS = ("label", "labels")
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
SAVED_DATASET_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


@dataclass
class Split:
    """Texts (one tuple entry per text column, so sentence pairs work) and their integer labels."""

    texts: list[tuple[str, ...]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int, seed: int = 0) -> Split:
        """``n`` examples drawn with the class balance kept where possible (for quick runs)."""
        if n <= 0:
            raise PrunekitError(f"subset size must be positive, got {n}")
        if n >= len(self):
            return self
        _, taken = take(list(range(len(self))), self.labels, n, seed)
        taken.sort()
        return Split([self.texts[i] for i in taken], [self.labels[i] for i in taken])


@dataclass
class ClassificationData:
    """Train / validation / test splits sharing one label encoding (ids index ``label_names``)."""

    train: Split
    validation: Split
    test: Split
    label_names: list[str]
    text_columns: tuple[str, ...]
    label_column: str
    source: str

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def with_labels(self, label_names: Sequence[str]) -> ClassificationData:
        """Re-encode the label ids in another ordering, e.g. a fine-tuned model's ``id2label``."""
        target = [str(name) for name in label_names]
        missing = [name for name in self.label_names if name not in target]
        if missing:
            raise PrunekitError(f"labels {missing} are not in the model's label set {target}")
        new_id = [target.index(name) for name in self.label_names]

        def recode(split: Split) -> Split:
            return Split(split.texts, [new_id[y] for y in split.labels])

        return replace(
            self,
            train=recode(self.train),
            validation=recode(self.validation),
            test=recode(self.test),
            label_names=target,
        )


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def _format(path: Path) -> str | None:
    name = path.name.lower()
    for ext in COMPRESSION:
        if name.endswith(ext):
            name = name[: -len(ext)]
    return FORMATS.get(Path(name).suffix)


def _read_table(path: Path) -> pd.DataFrame:
    """One file as a frame. ``attrs["typed"]``: its cells have types of their own (JSON, Parquet), so a text
    that is not a string is an error rather than a number to print; ``attrs["duplicated"]``: header names
    (or JSON keys) that occur more than once, {name: count}."""
    fmt = _format(path)
    if fmt is None:
        raise PrunekitError(
            f"unsupported data file {path}: use .csv, .tsv, .jsonl, .json or .parquet "
            "(or a folder of train/validation/test files, or a datasets.save_to_disk folder)"
        )
    how = fmt.upper()
    try:
        if fmt in ("csv", "tsv"):
            sample = _text_sample(path)
            sep = "\t" if fmt == "tsv" else _sniff_delimiter(sample)
            how = f"{how} with delimiter {sep!r}" + (" (sniffed)" if fmt == "csv" and sep != "," else "")
            # Only empty cells are missing: a review that reads "NA" or "null" is still text.
            df = pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""])
            df.attrs["duplicated"] = _repeated(_header(sample, sep))
            return df
        if fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            with get_handle(path, "r", encoding="utf-8", compression="infer") as handle:
                df = _read_json(handle.handle.read(), lines=fmt == "jsonl")
        df.attrs["typed"] = True
        return df
    except UnicodeDecodeError as err:
        raise PrunekitError(f"cannot read {path} as {how}: it is not UTF-8 text (byte {err.object[err.start]:#04x} "
                            "cannot start a character there): save it as UTF-8") from None
    except pd.errors.ParserError as err:
        fix = "name a tab-separated file .tsv, " if fmt == "csv" else ""
        raise PrunekitError(f"cannot read {path} as {how}: {first_line(err)} ({fix}check the quoting of "
                            "texts that hold the delimiter)") from None
    except (ValueError, TypeError, OSError, ImportError) as err:  # TypeError: pandas on odd JSON layouts
        raise PrunekitError(f"cannot read {path} as {how}: {first_line(err)}") from None


def _text_sample(path: Path, size: int = 32_768) -> str:
    """The first ``size`` characters (whole lines when there are several), decompressed as pandas would."""
    with get_handle(path, "r", encoding="utf-8", compression="infer", errors="replace") as handle:
        sample = handle.handle.read(size)
    return sample[: sample.rfind("\n") + 1] or sample


def _sniff_delimiter(sample: str) -> str:
    """The delimiter of a ``.csv`` file: comma when it splits the header; else csv.Sniffer's pick among tab ; |
    on the first lines (a TSV named .csv is common); comma when the sample cannot tell. The header decides
    first because the Sniffer can be swayed by quotes and apostrophes inside texts."""
    if len(_header(sample, ",")) > 1:
        return ","
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def _header(sample: str, sep: str) -> list[str]:
    """The header row as written (pandas renames a repeated ``text`` to ``text.1``, hiding the repeat)."""
    try:
        return next((row for row in csv.reader(io.StringIO(sample, newline=""), delimiter=sep) if row), [])
    except csv.Error:  # pandas will say what is wrong with the file
        return []


def _repeated(names: Iterable[Hashable]) -> dict[Hashable, int]:
    return {name: n for name, n in Counter(names).items() if n > 1}


class _JsonObject(dict):
    """A JSON object that remembers how often each key was written (``json`` silently keeps the last)."""

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        self.repeated = _repeated(k for k, _ in pairs) if len(self) < len(pairs) else {}


def _read_json(text: str, lines: bool) -> pd.DataFrame:
    """Records from JSON Lines, or from a JSON document (a list of objects, or a layout pandas reads; a
    document that does not parse is read as JSON Lines): one object per row, keys are columns."""
    items = _json_lines(text) if lines else None
    if items is None:
        try:
            doc = json.loads(text, object_pairs_hook=_JsonObject)
        except json.JSONDecodeError:
            items = _json_lines(text)
        else:
            if isinstance(doc, dict):
                return pd.read_json(io.StringIO(text), dtype=False)
            if not isinstance(doc, list):
                raise ValueError(f"the document is a JSON {_kind(doc)}, not a list of objects")
            items = [(f"item {i}", v) for i, v in enumerate(doc, start=1)]
    repeats: dict[Hashable, int] = {}
    for where, record in items:
        if not isinstance(record, dict):
            raise ValueError(f"{where} is a JSON {_kind(record)}, not an object with a key per column")
        for key, n in record.repeated.items():
            repeats[key] = max(n, repeats.get(key, 0))
    df = pd.DataFrame([record for _, record in items])
    df.attrs["duplicated"] = repeats
    return df


def _json_lines(text: str) -> list[tuple[str, object]]:
    """(where, value) of each non-blank line; lines end at \\n only, as JSON strings may hold U+2028."""
    items = []
    for i, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                items.append((f"line {i}", json.loads(line, object_pairs_hook=_JsonObject)))
            except json.JSONDecodeError as err:
                raise ValueError(f"line {i}: {err.msg} (column {err.colno})") from None
    return items


def _kind(value: object) -> str:
    """A value's type in the words of JSON (numpy scalars included)."""
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple | np.ndarray):
        return "list"
    return "string" if isinstance(value, str) else "null" if value is None else type(value).__name__


def _read_folder(path: Path) -> dict[str, pd.DataFrame]:
    found: dict[str, Path] = {}
    for f in sorted(path.iterdir()):
        split = SPLIT_ALIASES.get(f.name.split(".", 1)[0].lower())
        if split is None or not f.is_file() or _format(f) is None:
            continue
        if split in found:
            raise PrunekitError(f"{path} has two {split} files ({found[split].name}, {f.name}): keep one")
        found[split] = f
    if "train" not in found:
        raise PrunekitError(
            f"{path} has no train.csv/.tsv/.jsonl/.json/.parquet file and is not a datasets.save_to_disk folder"
        )
    return {split: _read_table(f) for split, f in found.items()}


def _read_saved_dataset(path: Path) -> dict[str, pd.DataFrame]:
    try:
        import datasets
    except ImportError:
        raise PrunekitError(f"{path} is a datasets.save_to_disk folder: pip install datasets to read it") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises many types for a damaged folder
        raise PrunekitError(f"cannot load the saved dataset {path}: {first_line(err)}") from None
    parts = {"train": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
    frames: dict[str, pd.DataFrame] = {}
    for key, ds in parts.items():
        split = SPLIT_ALIASES.get(key.lower())
        if split is None:
            continue
        df = ds.to_pandas()
        for col, feature in ds.features.items():
            if isinstance(feature, datasets.ClassLabel):  # ids -> names; -1 marks an unlabelled row
                df[col] = [feature.names[v] if 0 <= v < len(feature.names) else None for v in df[col]]
        df.attrs["typed"] = True
        frames[split] = df
    if "train" not in frames:
        if len(parts) != 1:
            raise PrunekitError(f"{path} has splits {sorted(parts)} but none called train")
        frames["train"] = next(iter(parts.values())).to_pandas()
        frames["train"].attrs["typed"] = True
    return frames


def read_tables(path: Path) -> dict[str, pd.DataFrame]:
    """The tables a data file or folder holds, by split name (one file: all of it under "train")."""
    if path.is_dir():
        if any((path / m).exists() for m in SAVED_DATASET_MARKERS):
            return _read_saved_dataset(path)
        return _read_folder(path)
    return {"train": _read_table(path)}


# ---------------------------------------------------------------------------------------------
# columns and labels
# ---------------------------------------------------------------------------------------------


def _pick_columns(
    columns: list[str], text_columns: Sequence[str] | None, label_column: str | None, where: str,
    label_defaults: Sequence[str] = LABEL_COLUMN_DEFAULTS,
) -> tuple[tuple[str, ...], str]:
    available = ", ".join(printable(str(c)) for c in columns)
    if label_column is None:
        label_column = next((c for c in label_defaults if c in columns), None)
        if label_column is None:
            expected = " or ".join(repr(c) for c in label_defaults)
            raise PrunekitError(
                f"no label column in {where}: expected {expected} (columns: {available}); pass label_column"
            )
    if text_columns is None:
        texts = next((t for t in TEXT_COLUMN_DEFAULTS if all(c in columns for c in t)), None)
        if texts is None:
            raise PrunekitError(
                f"no text column in {where}: expected 'text', 'sentence' or 'sentence1'+'sentence2' "
                f"(columns: {available}); pass text_columns"
            )
    else:
        texts = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
        if not texts:
            raise PrunekitError("text_columns is empty: name one column, or two for sentence pairs")
        if len(set(texts)) < len(texts):  # each text would be repeated (and some checks would see a table)
            raise PrunekitError(f"text_columns {list(texts)} names a column twice")
    for col in (*texts, label_column):
        if col not in columns:
            raise PrunekitError(f"column {col!r} is not in {where} (columns: {available})")
    if label_column in texts:
        raise PrunekitError(f"column {label_column!r} cannot be both a text and the label column")
    return texts, label_column


_INT_TEXT = re.compile(r"-?\d+")


def _label_name(value: object) -> str:
    if isinstance(value, float) and value.is_integer():  # ints read as floats next to missing cells
        return str(int(value))
    return str(value).strip()


def _label_names(values: list[object]) -> list[str]:
    """Sorted label names: numerically when every label is an integer, else alphabetically."""
    names = set(values)
    if all(_INT_TEXT.fullmatch(name) for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _clean(df: pd.DataFrame, texts: tuple[str, ...], label: str, where: str) -> pd.DataFrame:
    """Only the columns used, with rows missing any of them dropped. A used column whose name repeats, a text
    that is not a string in a typed file (JSON, Parquet: a list, an object, a number) and a label that is not
    a single value are refused, not silently resolved or printed as text."""
    repeated = {**df.attrs.get("duplicated", {}), **_repeated(df.columns)}
    for col in dict.fromkeys((*texts, label)):
        if col in repeated:
            raise PrunekitError(f"column {col!r} appears {repeated[col]} times in {where}: rename or drop the "
                                "copies, so that it is clear which one to use")
    typed, df = df.attrs.get("typed", False), df[[*texts, label]]
    row = _first_bad(df[label], pd.api.types.is_scalar)
    if row is not None:
        raise PrunekitError(f"label column {label!r} in {where} holds {_kind(df[label].iloc[row])}s (row {row + 1}): "
                            "only single-label classification is supported")
    for col in texts if typed else ():
        row = _first_bad(df[col], lambda v: isinstance(v, str) or _is_missing(v))
        if row is not None:
            value = df[col].iloc[row]
            kind = _kind(value)
            raise PrunekitError(f"text column {col!r} in {where} holds {'an' if kind[0] in 'aeiou' else 'a'} {kind} "
                                f"at row {row + 1} ({shown(value, 40)}): texts must be strings (null or empty for "
                                "a missing text)")
    missing = df.map(_is_missing).any(axis=1)
    return df[~missing]


def _first_bad(column: pd.Series, ok) -> int | None:
    """Position of the first value for which ``ok`` is false, if any."""
    bad = np.flatnonzero(~column.map(ok).to_numpy(dtype=bool))
    return int(bad[0]) if len(bad) else None


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


def read_labelled(
    spec: str, text_columns: Sequence[str] | None, label_column: str | None, kind: str,
    label_defaults: Sequence[str] = LABEL_COLUMN_DEFAULTS,
) -> tuple[dict[str, pd.DataFrame], tuple[str, ...], str]:
    """The non-empty splits of a built-in ``kind`` dataset, file, folder or saved dataset, with only the text and
    label columns (rows missing either dropped, with a warning), whatever the labels mean: each task reads
    its labels (class names, numbers) from these frames, whose index is the row in the file (0-based)."""
    spec = str(spec)
    asset = None if os.path.exists(spec) else get(spec)
    if asset is not None and asset.kind != kind:
        raise PrunekitError(f"{spec!r} is a built-in {asset.kind} asset, not a {kind} dataset")
    path = Path(resolve_data(spec)).expanduser()
    if not path.exists():
        known = ", ".join(n for n, a in ASSETS.items() if a.kind == kind)
        raise PrunekitError(f"no such file or folder: {spec} (built-in datasets: {known})")

    frames = read_tables(path)
    texts, label = _pick_columns(list(frames["train"].columns), text_columns, label_column, str(path),
                                 label_defaults)
    for split, df in frames.items():
        _pick_columns(list(df.columns), texts, label, f"{path} ({split})")

    rows = sum(len(df) for df in frames.values())
    if rows == 0:
        raise PrunekitError(f"{spec} has no rows")
    cleaned = {split: _clean(df, texts, label, f"{path} ({split})") for split, df in frames.items()}
    kept = sum(len(df) for df in cleaned.values())
    if kept == 0 or cleaned["train"].empty:
        raise PrunekitError(f"every row of {spec} has a missing text or label ({rows} rows)")
    if kept < rows:
        warnings.warn(f"dropped {rows - kept} of {rows} rows of {spec} with a missing text or label", stacklevel=3)
    return {split: df for split, df in cleaned.items() if not df.empty}, texts, label


def text_tuples(df: pd.DataFrame, texts: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Each row's texts (one entry per text column), as every :class:`Split` holds them."""
    return [tuple(str(v) for v in row) for row in df[list(texts)].itertuples(index=False)]


def load_classification(
    spec: str,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    split_seed: int = 0,
) -> ClassificationData:
    """Load labelled text from a built-in name, a file, a folder of splits, or a saved dataset."""
    cleaned, texts, label = read_labelled(spec, text_columns, label_column, "classification")
    names = {split: [_label_name(v) for v in df[label]] for split, df in cleaned.items()}
    label_names = _label_names([n for split_names in names.values() for n in split_names])
    if len(label_names) < 2:
        raise PrunekitError(f"{spec} has a single class ({label_names[0]!r}): classification needs at least two")
    ids = {name: i for i, name in enumerate(label_names)}
    splits = {split: Split(text_tuples(df, texts), [ids[n] for n in names[split]]) for split, df in cleaned.items()}
    splits = complete_splits(splits, split_seed, spec)
    return ClassificationData(
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        label_names=label_names,
        text_columns=texts,
        label_column=label,
        source=spec,
    )


def complete_splits(splits: dict[str, Split], seed: int, spec: str, stratify: bool = True) -> dict[str, Split]:
    """Carve whichever of validation / test is missing out of train (fixed seed; stratified by class unless
    ``stratify`` is False, as for numeric targets)."""
    train = splits["train"]
    strata = train.labels if stratify else None

    def pick(idx: list[int]) -> Split:
        return Split([train.texts[i] for i in idx], [train.labels[i] for i in idx])

    if "validation" not in splits and "test" not in splits:
        return {name: pick(idx) for name, idx in held_out_split(len(train), seed, strata).items()}
    missing = "validation" if "validation" not in splits else "test" if "test" not in splits else None
    if missing is None:
        return splits
    if len(train) < 2:
        raise PrunekitError(f"{spec}: {len(train)} train row is too few to carve a {missing} split from")
    rest, taken = take(list(range(len(train))), strata, held_out_size(len(train)), seed)
    return {**splits, "train": pick(rest), missing: pick(taken)}

"""Text-classification data from a built-in name, a table file, a folder of splits or a saved dataset.

Everything ends up as three :class:`Split` objects with integer labels, so training and evaluation
code never cares where the text came from. Splits that a source lacks are carved out of its train
rows with a fixed seeded stratified split, independent of the run seed, so that every run of an
experiment (and every pruning method compared in it) sees the same test set.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from prunekit.errors import PrunekitError

TEXT_COLUMN_DEFAULTS: tuple[tuple[str, ...], ...] = (("text",), ("sentence",), ("sentence1", "sentence2"))
LABEL_COLUMN_DEFAULTS = ("label", "labels")
HELD_OUT_FRACTION = 0.1  # validation and test each take 10 % when they have to be carved out of train
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
        _, taken = _take(list(range(len(self))), self.labels, n, seed)
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
# splitting
# ---------------------------------------------------------------------------------------------


def _take(idx: list[int], labels: Sequence[Hashable], n: int, seed: int) -> tuple[list[int], list[int]]:
    """Split ``idx`` into (rest, ``n`` taken), stratified unless some class is too small for that."""
    strata = [labels[i] for i in idx]
    try:
        rest, taken = train_test_split(idx, test_size=n, random_state=seed, stratify=strata)
    except ValueError:  # a class with one member, or fewer rows to take than classes
        rest, taken = train_test_split(idx, test_size=n, random_state=seed)
    return list(rest), list(taken)


def _held_out_size(n: int) -> int:
    return max(1, round(n * HELD_OUT_FRACTION))


def stratified_split(labels: Sequence[Hashable], seed: int = 0) -> dict[str, list[int]]:
    """Row indices of a fixed 80/10/10 train/validation/test split, stratified by label."""
    n = len(labels)
    if n < 3:
        raise PrunekitError(f"only {n} labelled rows: need at least 3 to make train/validation/test splits")
    n_val = n_test = _held_out_size(n)
    train, held = _take(list(range(n)), labels, n_val + n_test, seed)
    test, val = _take(held, labels, n_val, seed)
    return {"train": train, "validation": val, "test": test}


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
    fmt = _format(path)
    if fmt is None:
        raise PrunekitError(
            f"unsupported data file {path}: use .csv, .tsv, .jsonl, .json or .parquet "
            "(or a folder of train/validation/test files, or a datasets.save_to_disk folder)"
        )
    # Only empty cells are missing: a review that reads "NA" or "null" is still text.
    na = {"keep_default_na": False, "na_values": [""]}
    try:
        if fmt == "csv":
            return pd.read_csv(path, **na)
        if fmt == "tsv":
            return pd.read_csv(path, sep="\t", **na)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if fmt == "json":
            try:
                return pd.read_json(path, dtype=False)
            except ValueError:
                return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PrunekitError(f"cannot read {path} as {fmt.upper()}: {first}") from None


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
        raise PrunekitError(f"cannot load the saved dataset {path}: {err}") from None
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
        frames[split] = df
    if "train" not in frames:
        if len(parts) != 1:
            raise PrunekitError(f"{path} has splits {sorted(parts)} but none called train")
        frames["train"] = next(iter(parts.values())).to_pandas()
    return frames


def _read(path: Path) -> dict[str, pd.DataFrame]:
    if path.is_dir():
        if any((path / m).exists() for m in SAVED_DATASET_MARKERS):
            return _read_saved_dataset(path)
        return _read_folder(path)
    return {"train": _read_table(path)}


# ---------------------------------------------------------------------------------------------
# columns and labels
# ---------------------------------------------------------------------------------------------


def _pick_columns(
    columns: list[str], text_columns: Sequence[str] | None, label_column: str | None, where: str
) -> tuple[tuple[str, ...], str]:
    available = ", ".join(map(str, columns))
    if label_column is None:
        label_column = next((c for c in LABEL_COLUMN_DEFAULTS if c in columns), None)
        if label_column is None:
            raise PrunekitError(
                f"no label column in {where}: expected 'label' or 'labels' (columns: {available}); pass label_column"
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
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _clean(df: pd.DataFrame, texts: tuple[str, ...], label: str, where: str) -> pd.DataFrame:
    """Only the columns used, with rows missing any of them dropped."""
    df = df[[*texts, label]]
    first = df[label].dropna().iloc[:1]
    if len(first) and not pd.api.types.is_scalar(first.iloc[0]):
        raise PrunekitError(
            f"label column {label!r} in {where} holds lists: only single-label classification is supported"
        )
    missing = df.map(_is_missing).any(axis=1)
    return df[~missing]


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


def load_classification(
    spec: str,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    split_seed: int = 0,
) -> ClassificationData:
    """Load labelled text from a built-in name, a file, a folder of splits, or a saved dataset."""
    from prunekit.assets import ASSETS, get, resolve_data  # lazy: assets imports this module

    spec = str(spec)
    asset = None if os.path.exists(spec) else get(spec)
    if asset is not None and asset.kind != "classification":
        raise PrunekitError(f"{spec!r} is a built-in {asset.kind} asset, not a classification dataset")
    path = Path(resolve_data(spec)).expanduser()
    if not path.exists():
        known = ", ".join(n for n, a in ASSETS.items() if a.kind == "classification")
        raise PrunekitError(f"no such file or folder: {spec} (built-in datasets: {known})")

    frames = _read(path)
    texts, label = _pick_columns(list(frames["train"].columns), text_columns, label_column, str(path))
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
        warnings.warn(f"dropped {rows - kept} of {rows} rows of {spec} with a missing text or label", stacklevel=2)
    cleaned = {split: df for split, df in cleaned.items() if not df.empty}

    names = {split: [_label_name(v) for v in df[label]] for split, df in cleaned.items()}
    label_names = _label_names([n for split_names in names.values() for n in split_names])
    if len(label_names) < 2:
        raise PrunekitError(f"{spec} has a single class ({label_names[0]!r}): classification needs at least two")
    ids = {name: i for i, name in enumerate(label_names)}
    splits = {
        split: Split(
            [tuple(str(v) for v in row) for row in df[list(texts)].itertuples(index=False)],
            [ids[n] for n in names[split]],
        )
        for split, df in cleaned.items()
    }
    splits = _complete_splits(splits, split_seed, spec)
    return ClassificationData(
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        label_names=label_names,
        text_columns=texts,
        label_column=label,
        source=spec,
    )


def _complete_splits(splits: dict[str, Split], seed: int, spec: str) -> dict[str, Split]:
    """Carve whichever of validation / test is missing out of train (fixed seed, stratified)."""
    train = splits["train"]

    def pick(idx: list[int]) -> Split:
        return Split([train.texts[i] for i in idx], [train.labels[i] for i in idx])

    if "validation" not in splits and "test" not in splits:
        return {name: pick(idx) for name, idx in stratified_split(train.labels, seed).items()}
    missing = "validation" if "validation" not in splits else "test" if "test" not in splits else None
    if missing is None:
        return splits
    if len(train) < 2:
        raise PrunekitError(f"{spec}: {len(train)} train row is too few to carve a {missing} split from")
    rest, taken = _take(list(range(len(train))), train.labels, _held_out_size(len(train)), seed)
    return {**splits, "train": pick(rest), missing: pick(taken)}

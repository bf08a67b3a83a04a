"""Text-regression data: the same sources, columns and seeded 80/10/10 splits as classification, with a
numeric target instead of a class (not stratified: there are no classes to balance)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from prunekit.data.classification import (
    LABEL_COLUMN_DEFAULTS,
    Split,
    complete_splits,
    read_labelled,
    text_tuples,
)
from prunekit.errors import PrunekitError, shown

#: Where a numeric target is looked for when no label column is named: the classification names, then score.
TARGET_COLUMN_DEFAULTS = (*LABEL_COLUMN_DEFAULTS, "score")


@dataclass
class RegressionData:
    """Train / validation / test splits whose labels are finite floats."""

    train: Split
    validation: Split
    test: Split
    text_columns: tuple[str, ...]
    label_column: str
    source: str

    @property
    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    @property
    def label_names(self) -> list[str]:
        """The model's one output, named after the target column (its ``id2label``)."""
        return [self.label_column]

    @property
    def num_labels(self) -> int:
        return 1


def numeric_labels(column: pd.Series, where: str) -> list[float]:
    """The column's values as finite floats; the first value that is not a number (or is NaN/inf) is refused,
    naming its row in the file (the frame's index is the file's row, 0-based)."""
    out = []
    for row, value in column.items():
        number = _number(value)
        if number is None or not math.isfinite(number):
            what = "not a number" if number is None else "not finite"
            raise PrunekitError(f"label column {column.name!r} in {where} must hold numbers for regression: row "
                                f"{int(row) + 1} holds {shown(value, 40)} ({what})")
        out.append(number)
    return out


def _number(value: object) -> float | None:
    if isinstance(value, bool):  # True is an int to Python, not a score
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def load_regression(
    spec: str,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    split_seed: int = 0,
) -> RegressionData:
    """Texts and numeric targets from a built-in regression name, a file, a folder of splits or a saved
    dataset; missing splits are carved out of train with the fixed seeded (unstratified) 80/10/10 rule."""
    cleaned, texts, label = read_labelled(spec, text_columns, label_column, "regression", TARGET_COLUMN_DEFAULTS)
    splits = {split: Split(text_tuples(df, texts), numeric_labels(df[label], f"{spec} ({split})"))
              for split, df in cleaned.items()}
    splits = complete_splits(splits, split_seed, str(spec), stratify=False)
    return RegressionData(train=splits["train"], validation=splits["validation"], test=splits["test"],
                          text_columns=texts, label_column=label, source=str(spec))

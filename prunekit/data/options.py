"""Which data a run reads: the one option class tasks load from, below the settings that validate a run
(``prunekit.config`` re-exports it for the loops, the CLI and recipes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataOptions:
    """Which dataset and columns; sizes can be capped for quick runs and tests."""

    data: str = "movie-reviews"
    text_columns: tuple[str, ...] | None = None
    label_column: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int = 128
    doc_stride: int = 128  # question answering: tokens shared by consecutive windows of a long context
    max_answer_length: int = 30  # question answering: longest predicted answer, in tokens

"""Plain text corpora: a .txt file, a folder of .txt files, the built-in `wikipedia`, or the texts of
any classification dataset. Used where only text matters (vocabulary pruning, LM calibration)."""

from __future__ import annotations

from pathlib import Path

from prunekit.assets import resolve_data
from prunekit.data.classification import read_tables
from prunekit.errors import PrunekitError, printable


def read_texts(spec: str, text_column: str | None = None) -> list[str]:
    """Non-empty texts of a corpus: paragraphs of text files, or every text cell of a table or dataset
    (CSV/JSONL/Parquet/``save_to_disk`` folder; labels optional; column ``text`` unless told)."""
    path = Path(resolve_data(spec)).expanduser()
    if path.is_file() and path.suffix in (".txt", ".text", ".md"):
        files = [path]
    elif path.is_dir() and not any(path.glob("train.*")) and any(path.glob("*.txt")):
        files = sorted(path.glob("*.txt"))
    else:
        if not path.exists():
            raise PrunekitError(f"text corpus {spec!r} does not exist")
        frames = read_tables(path)
        column = text_column or next((c for c in ("text", "sentence", "content", "document")
                                      if all(c in f.columns for f in frames.values())), None)
        if column is None or any(column not in f.columns for f in frames.values()):
            cols = ", ".join(printable(str(c)) for c in next(iter(frames.values())).columns)
            raise PrunekitError(f"no text column {column or 'text'!r} in {spec!r} (columns: {cols})")
        texts = [str(t) for f in frames.values() for t in f[column].tolist() if isinstance(t, str) and t.strip()]
        if not texts:
            raise PrunekitError(f"text corpus {spec!r} is empty")
        return texts
    texts: list[str] = []
    for f in files:
        texts += [p.strip() for p in f.read_text(encoding="utf-8", errors="replace").split("\n\n") if p.strip()]
    if not texts:
        raise PrunekitError(f"text corpus {spec!r} is empty")
    return texts

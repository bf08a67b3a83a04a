"""Plain text corpora: a .txt file, a folder of .txt files, the built-in `wikipedia`, or the texts of
any classification dataset. Used where only text matters (vocabulary pruning, LM calibration)."""

from __future__ import annotations

from pathlib import Path

from prunekit.assets import resolve_data
from prunekit.errors import PrunekitError


def read_texts(spec: str) -> list[str]:
    """Non-empty texts of a corpus: paragraphs of text files, or every text cell of a dataset."""
    path = Path(resolve_data(spec)).expanduser()
    if path.is_file() and path.suffix in (".txt", ".text", ".md"):
        files = [path]
    elif path.is_dir() and not any(path.glob("train.*")) and any(path.glob("*.txt")):
        files = sorted(path.glob("*.txt"))
    else:
        from prunekit.data.classification import load_classification

        if not path.exists() and not Path(spec).exists() and resolve_data(spec) == spec:
            raise PrunekitError(f"text corpus {spec!r} does not exist")
        ds = load_classification(spec)
        texts = [t for split in (ds.train, ds.validation, ds.test) for row in split.texts for t in row]
        return [t for t in texts if t.strip()]
    texts: list[str] = []
    for f in files:
        texts += [p.strip() for p in f.read_text(encoding="utf-8", errors="replace").split("\n\n") if p.strip()]
    if not texts:
        raise PrunekitError(f"text corpus {spec!r} is empty")
    return texts

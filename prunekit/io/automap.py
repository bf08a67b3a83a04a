"""A saved model folder must not point at code it does not hold.

A transformers folder may name its own Python classes in ``auto_map`` (``config.json``,
``tokenizer_config.json``): ``"AutoModel": "modeling_x.XModel"`` means ``modeling_x.py`` beside it, run
under ``trust_remote_code``. prunekit's outputs keep the config of the model they came from, but not its
``*.py`` files (transformers copies them only for a model loaded as remote code). An entry left pointing
at a missing file would make the pruned folder fetch or run code from somewhere else, or fail to load,
so every writer drops such entries (:func:`drop_dangling_auto_map`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prunekit.io.atomic import write_json_atomic

#: the files in which transformers looks for ``auto_map``
AUTO_MAP_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")


def drop_dangling_auto_map(folder: str | Path) -> list[str]:
    """Remove the ``auto_map`` entries of ``folder``'s configs whose code file is not in ``folder`` (or that
    name a hub repository's code, ``repo--module.Class``); returns them as ``file:AutoClass``."""
    folder = Path(folder)
    dropped: list[str] = []
    for name in AUTO_MAP_FILES:
        path = folder / name
        if not path.is_file():
            continue
        doc = json.loads(path.read_text())
        auto_map = doc.get("auto_map") if isinstance(doc, dict) else None
        if auto_map is None:
            continue
        if not isinstance(auto_map, dict):  # an old tokenizer's [slow, fast] pair: no class to check it by
            auto_map = {"auto_map": auto_map}
        kept = {k: v for k, v in auto_map.items() if _present(folder, v)}
        if kept == auto_map:
            continue
        dropped += [f"{name}:{k}" for k in auto_map if k not in kept]
        if kept:
            doc["auto_map"] = kept
        else:
            del doc["auto_map"]
        write_json_atomic(path, doc)
    return dropped


def _present(folder: Path, reference: Any) -> bool:
    """Whether every class ``reference`` names (``module.Class``, or a tokenizer's [slow, fast] pair) has its
    module file in ``folder``."""
    refs = [r for r in (reference if isinstance(reference, list) else [reference]) if r is not None]
    modules = [r.rsplit(".", 1)[0] if isinstance(r, str) and "." in r else "" for r in refs]
    return bool(refs) and all(m.isidentifier() and (folder / f"{m}.py").is_file() for m in modules)

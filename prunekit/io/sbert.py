"""sentence-transformers folders: read the pooling a folder declares, write the files that make a saved
encoder folder load with ``SentenceTransformer(DIR)``.

A sentence-transformers folder is a transformers checkpoint plus ``modules.json`` (the pipeline:
Transformer → Pooling → optionally Normalize), ``sentence_bert_config.json`` (the maximum sequence length)
and one sub-folder per later module (``1_Pooling/config.json``). prunekit reads the pooling and the
normalisation from it, and writes the same files back beside a pruned model, so nothing of the pipeline
is lost on the way through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prunekit.errors import PrunekitError

MODULES = "modules.json"
ST_TRANSFORMER = "sentence_transformers.models.Transformer"
ST_POOLING = "sentence_transformers.models.Pooling"
ST_NORMALIZE = "sentence_transformers.models.Normalize"
_FLAGS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
          "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}
#: The pooling modes prunekit computes (sentence-transformers' ``pooling_mode_*_tokens`` keys).
POOLING_MODES = ("mean", "cls", "max")


@dataclass(frozen=True)
class Pooling:
    """How token vectors become one sentence vector, and whether it is scaled to unit length."""

    mode: str = "mean"
    normalize: bool = False
    max_seq_length: int | None = None

    def to_dict(self) -> dict:
        return {"mode": self.mode, "normalize": self.normalize, "max_seq_length": self.max_seq_length}

    @classmethod
    def from_dict(cls, d: dict) -> Pooling:
        return cls(str(d.get("mode", "mean")), bool(d.get("normalize", False)), d.get("max_seq_length"))


def is_sentence_transformers_dir(folder: str | Path) -> bool:
    return (Path(folder).expanduser() / MODULES).is_file()


def _module_type(entry: dict) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def read_pooling(folder: str | Path) -> Pooling:
    """The pooling a sentence-transformers folder declares; a folder whose pooling module (or its config)
    is missing is refused, since every embedding would otherwise be guessed."""
    root = Path(folder).expanduser()
    try:
        modules = json.loads((root / MODULES).read_text())
    except (OSError, ValueError) as err:
        raise PrunekitError(f"{root / MODULES}: not a readable sentence-transformers module list ({err})") from err
    pooling = [m for m in modules if _module_type(m) == "Pooling"]
    if not pooling:
        raise PrunekitError(f"sentence-transformers folder {str(root)!r} has no Pooling module in {MODULES}: "
                            "cannot tell how token vectors become a sentence embedding")
    config_path = root / str(pooling[0].get("path", "")) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise PrunekitError(f"sentence-transformers folder {str(root)!r}: its pooling module's config "
                            f"{config_path} is missing or unreadable") from err
    mode = config.get("pooling_mode")
    if mode is None:
        chosen = [m for m, key in _FLAGS.items() if config.get(key)]
        mode = chosen[0] if len(chosen) == 1 else "+".join(chosen) or "none"
    if mode not in POOLING_MODES:
        raise PrunekitError(f"sentence-transformers folder {str(root)!r} pools by {mode!r}; prunekit computes "
                            f"{', '.join(POOLING_MODES)} pooling")
    normalize = any(_module_type(m) == "Normalize" for m in modules)
    max_len = None
    bert_config = root / "sentence_bert_config.json"
    if bert_config.is_file():
        max_len = json.loads(bert_config.read_text()).get("max_seq_length")
    return Pooling(mode, normalize, max_len)


def write_sentence_transformers(folder: str | Path, pooling: Pooling, dim: int) -> None:
    """Write the sentence-transformers files beside a transformers checkpoint already saved in ``folder``."""
    root = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING}]
    if pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": ST_NORMALIZE})
        (root / "2_Normalize").mkdir(exist_ok=True)
    (root / MODULES).write_text(json.dumps(modules, indent=2) + "\n")
    (root / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": pooling.max_seq_length or 512, "do_lower_case": False}, indent=2) + "\n")
    (root / "1_Pooling").mkdir(exist_ok=True)
    flags = {key: mode == pooling.mode for mode, key in _FLAGS.items()}
    (root / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": dim, **flags}, indent=2) + "\n")


__all__ = ["POOLING_MODES", "Pooling", "is_sentence_transformers_dir", "read_pooling", "write_sentence_transformers"]

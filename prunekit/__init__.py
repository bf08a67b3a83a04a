"""prunekit: prune NLP models end to end and measure what it costs.

The public API in a few names; the CLI (`prunekit ...`) calls exactly these.
"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

from prunekit.errors import PrunekitError

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"

_API = {
    "prune": ("prunekit.pipeline", "prune"),
    "finetune": ("prunekit.pipeline", "finetune"),
    "evaluate": ("prunekit.pipeline", "evaluate"),
    "inspect": ("prunekit.pipeline", "inspect"),
    "prune_lm": ("prunekit.pipeline_lm", "prune_lm"),
    "evaluate_lm": ("prunekit.pipeline_lm", "evaluate_lm"),
    "zero_shot_scores": ("prunekit.report.zeroshot", "zero_shot_scores"),
    # the modules that register prunekit's built-in saved formats (prunekit.io.formats imports them first)
    "FORMAT_MODULES": ("prunekit.io.formats", "FORMAT_MODULES"),
}


def load(path: str | PathLike[str], trust_remote_code: bool = False) -> nn.Module:
    """Load any model prunekit saved (or any transformers folder, built-in name or hub id), ready for eval.

    The folder's format is recognised by the registry :mod:`prunekit.io.formats`; a format of your own
    is one :func:`~prunekit.io.formats.register_format` call away.
    """
    from prunekit.io.formats import load_saved

    return load_saved(path, trust_remote_code)


def __getattr__(name: str):
    # Lazy: `import prunekit` stays fast and does not import torch until the API is used.
    if name not in _API:
        raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
    import importlib

    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)


__all__ = ["PrunekitError", "evaluate", "evaluate_lm", "finetune", "inspect", "load", "prune", "prune_lm",
           "zero_shot_scores"]

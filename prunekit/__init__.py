"""prunekit: prune NLP models end to end and measure what it costs.

The public API in a few names; the CLI (`prunekit ...`) calls exactly these.
"""

from prunekit.errors import PrunekitError

__version__ = "0.1.0"

_API = {
    "prune": ("prunekit.pipeline", "prune"),
    "finetune": ("prunekit.pipeline", "finetune"),
    "evaluate": ("prunekit.pipeline", "evaluate"),
    "inspect": ("prunekit.pipeline", "inspect"),
    "load": ("prunekit.io.shapes", "load"),
    "prune_lm": ("prunekit.pipeline_lm", "prune_lm"),
    "evaluate_lm": ("prunekit.pipeline_lm", "evaluate_lm"),
}


def __getattr__(name: str):
    # Lazy: `import prunekit` stays fast and does not import torch until the API is used.
    if name not in _API:
        raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
    import importlib

    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)


__all__ = ["PrunekitError", "evaluate", "evaluate_lm", "finetune", "inspect", "load", "prune", "prune_lm"]

"""prunekit: prune NLP models end to end and measure what it costs.

The public API in a few names; the CLI (`prunekit ...`) calls exactly these.
"""

from prunekit.errors import PrunekitError

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import prunekit` stays fast and does not import torch until the API is used.
    from prunekit import pipeline
    from prunekit.io import hf

    api = {
        "prune": pipeline.prune,
        "finetune": pipeline.finetune,
        "evaluate": pipeline.evaluate,
        "inspect": pipeline.inspect,
        "load": hf.load_any,
    }
    if name in api:
        return api[name]
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")


__all__ = ["PrunekitError", "evaluate", "finetune", "inspect", "load", "prune"]

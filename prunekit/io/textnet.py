"""Saving and reloading the recurrent and conv text models: ``model.safetensors`` + ``prunekit_model.json``.

The JSON is the model's :class:`~prunekit.models.base.TextNetConfig` with its *current* widths (pruning
syncs them), so loading builds the right shapes first and then loads the weights strictly. A custom
module (not built by prunekit) is saved the same way with its widths in ``prunekit_textnet_shapes.json``;
:func:`load_into` cuts a freshly built instance of the user's class to those widths before loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from prunekit.errors import PrunekitError
from prunekit.io.atomic import atomic_output_dir, write_json_atomic

MODEL_JSON = "prunekit_model.json"
SHAPES_JSON = "prunekit_textnet_shapes.json"
WEIGHTS = "model.safetensors"


def is_textnet_dir(path: str | Path) -> bool:
    return (Path(path).expanduser() / MODEL_JSON).is_file()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def write_textnet(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, folder: str | Path) -> None:
    """Weights, config (or, for a custom module, its widths) and tokenizer into an existing folder."""
    from prunekit.models import TextNet
    from prunekit.prune.textnets import text_shapes

    folder = Path(folder)
    save_file(_state(model), str(folder / WEIGHTS), metadata={"format": "pt"})
    if isinstance(model, TextNet):
        model.sync_config()
        write_json_atomic(folder / MODEL_JSON, model.config.to_dict())
    else:
        write_json_atomic(folder / SHAPES_JSON, {"class": type(model).__name__, **text_shapes(model)})
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def save_textnet(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, out: str | Path,
                 force: bool = False) -> None:
    """:func:`write_textnet` into a folder that appears atomically."""
    with atomic_output_dir(out, force) as tmp:
        write_textnet(model, tokenizer, tmp)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    if not (folder / WEIGHTS).is_file():
        raise PrunekitError(f"{folder} has no {WEIGHTS}")
    return load_file(str(folder / WEIGHTS))


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], folder: Path) -> nn.Module:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
        raise PrunekitError(f"{folder}: weights do not match the saved shapes ({lines[-1].strip()})") from err
    return model.eval()


def load_textnet(path: str | Path) -> nn.Module:
    """Rebuild a built-in text model from its folder, ready for eval."""
    from prunekit.models import TextNetConfig, build_model

    folder = Path(path).expanduser()
    try:
        config = TextNetConfig.from_dict(json.loads((folder / MODEL_JSON).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise PrunekitError(f"{folder / MODEL_JSON} cannot be read ({err})") from err
    return _load_strict(build_model(config), _weights(folder), folder)


def load_into(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a pruned custom module's folder into ``module``, a fresh instance of the same class at its
    original widths: the first units/filters/dims are kept to reach the saved widths, then every weight
    is overwritten from the file."""
    from prunekit.prune.textnets import TextPlan, apply_text_plan, text_groups

    folder = Path(path).expanduser()
    try:
        saved: dict[str, Any] = json.loads((folder / SHAPES_JSON).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PrunekitError(f"{folder / SHAPES_JSON} cannot be read ({err})") from err
    widths = saved["widths"]
    have = {g.name: g.count for g in text_groups(module)}
    if set(have) != set(widths) or any(widths[n] > have[n] for n in have):
        raise PrunekitError(f"{folder} was saved from a module with groups {widths}; this {type(module).__name__} "
                            f"has {have}")
    apply_text_plan(module, TextPlan({n: list(range(w)) for n, w in widths.items()}))
    return _load_strict(module, _weights(folder), folder)

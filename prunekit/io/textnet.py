"""Saving and reloading the recurrent and conv text models: ``model.safetensors`` + ``prunekit_model.json``.

The JSON is the model's :class:`~prunekit.models.base.TextNetConfig` with its *current* widths (pruning
syncs them), so loading builds the right shapes first and then loads the weights strictly. A custom
module (not built by prunekit) is saved the same way with its widths, its import path and constructor
kwargs in ``prunekit_textnet_shapes.json``: :func:`load_into` cuts a freshly built instance of the
user's class to those widths before loading, and :func:`load_custom` builds that instance itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from prunekit.arch.textnets import text_layout
from prunekit.errors import PrunekitError
from prunekit.io.atomic import atomic_output_dir, write_json_atomic
from prunekit.io.automap import drop_dangling_auto_map
from prunekit.io.damaged import names_damaged_file
from prunekit.io.formats import register_format
from prunekit.models import TextNet, TextNetConfig, build_model
from prunekit.models.custom import (
    ModuleConfig,
    adapt,
    import_class,
    import_path_of,
    import_recorded_class,
    instantiate,
    user_class,
)
from prunekit.prune.textnets import TextPlan, apply_text_plan, text_groups, text_shapes

MODEL_JSON = "prunekit_model.json"
SHAPES_JSON = "prunekit_textnet_shapes.json"
WEIGHTS = "model.safetensors"


def is_textnet_dir(path: str | Path) -> bool:
    """A built-in LSTM/GRU/RNN/TextCNN folder, or a custom module's (see :func:`is_custom_dir`)."""
    folder = Path(path).expanduser()
    return (folder / MODEL_JSON).is_file() or is_custom_dir(folder)


def is_custom_dir(path: str | Path) -> bool:
    return (Path(path).expanduser() / SHAPES_JSON).is_file()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def write_textnet(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, folder: str | Path) -> None:
    """Weights, config (or, for a custom module, its widths) and tokenizer into an existing folder."""
    folder = Path(folder)
    save_file(_state(model), str(folder / WEIGHTS), metadata={"format": "pt"})
    if isinstance(model, TextNet):
        model.sync_config()
        write_json_atomic(folder / MODEL_JSON, model.config.to_dict())
    else:
        write_json_atomic(folder / SHAPES_JSON, _custom_record(model))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
        drop_dangling_auto_map(folder)


def _custom_record(model: nn.Module) -> dict[str, Any]:
    """A custom module's widths, and how to rebuild it: import path and constructor kwargs (None when
    unknown: the class is then called without arguments), labels and padding id when prunekit trained it."""
    config = getattr(model, "config", None)
    record = {"class": user_class(model).__name__, "module": import_path_of(model),
              "module_kwargs": getattr(config, "module_kwargs", None), **text_shapes(model)}
    if config is not None and hasattr(config, "id2label"):
        record.update(id2label={str(k): v for k, v in config.id2label.items()},
                      pad_token_id=getattr(config, "pad_token_id", 0))
    return record


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


@names_damaged_file("path")
def load_textnet(path: str | Path, module: str | None = None, module_kwargs: dict[str, Any] | None = None,
                 trust_remote_code: bool = False) -> nn.Module:
    """Rebuild a text model from its folder, ready for eval: a built-in one from its config, a custom one
    with :func:`load_custom` (``module``/``module_kwargs`` override what the folder recorded)."""
    folder = Path(path).expanduser()
    if not (folder / MODEL_JSON).is_file():
        return load_custom(folder, module, module_kwargs, trust_remote_code)
    try:
        config = TextNetConfig.from_dict(json.loads((folder / MODEL_JSON).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise PrunekitError(f"{folder / MODEL_JSON} cannot be read ({err})") from err
    return _load_strict(build_model(config), _weights(folder), folder)


@names_damaged_file("path")
def load_into(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a pruned custom module's folder into ``module``, a fresh instance of the same class at its
    original widths: the first units/filters/dims are kept to reach the saved widths, then every weight
    is overwritten from the file."""
    folder = Path(path).expanduser()
    widths = _read_shapes(folder)["widths"]
    have = {g.name: g.count for g in text_groups(module)}
    if set(have) != set(widths) or any(widths[n] > have[n] for n in have):
        raise PrunekitError(f"{folder} was saved from a module with groups {widths}; this {type(module).__name__} "
                            f"has {have}")
    apply_text_plan(module, TextPlan({n: list(range(w)) for n, w in widths.items()}))
    return _load_strict(module, _weights(folder), folder)


@names_damaged_file("path")
def load_custom(path: str | Path, module: str | None = None, module_kwargs: dict[str, Any] | None = None,
                trust_remote_code: bool = False) -> nn.Module:
    """A custom module's folder, rebuilt: import the class (``module``, else the import path the folder
    recorded, which only ``trust_remote_code`` lets run, and never from the working or the model folder:
    :func:`prunekit.models.custom.import_recorded_class`),
    construct it (``module_kwargs``, else the recorded ones), cut it to the saved widths and load the
    weights (:func:`load_into`); returned in prunekit's calling convention (:func:`prunekit.models.custom.adapt`):
    ``model(input_ids=..., attention_mask=...)`` gives ``.logits``."""
    folder = Path(path).expanduser()
    saved = _read_shapes(folder)
    path_ = module or saved.get("module")
    if not path_:
        raise PrunekitError(f"{folder} holds a custom {saved.get('class', 'module')} whose class cannot be imported "
                            "by name (defined in __main__?); pass --module pkg.mod:ClassName")
    if not isinstance(path_, str):
        raise PrunekitError(f"{folder / SHAPES_JSON}: 'module' must be a string such as 'pkg.mod:ClassName'")
    cls = import_class(path_) if module else import_recorded_class(path_, folder / SHAPES_JSON, trust_remote_code)
    kwargs = module_kwargs if module_kwargs is not None else saved.get("module_kwargs")
    net = load_into(instantiate(cls, kwargs), folder)
    layout = text_layout(net)
    config = ModuleConfig(path_, kwargs, layout.embedding[1].num_embeddings, layout.classifier[1].out_features,
                          saved.get("id2label") or {}, int(saved.get("pad_token_id", 0)))
    return adapt(net, config).eval()


def _read_shapes(folder: Path) -> dict[str, Any]:
    try:
        saved = json.loads((folder / SHAPES_JSON).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PrunekitError(f"{folder / SHAPES_JSON} cannot be read ({err})") from err
    if not isinstance(saved, dict) or not isinstance(saved.get("widths"), dict):
        raise PrunekitError(f"{folder / SHAPES_JSON} has no widths")
    return saved


register_format("textnet", is_textnet_dir, lambda folder, trust_remote_code: load_textnet(folder, trust_remote_code=
                trust_remote_code), priority=40, looks_for=f"{MODEL_JSON}, {SHAPES_JSON}")

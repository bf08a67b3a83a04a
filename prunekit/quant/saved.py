"""Saving and reloading dynamic-int8 models without pickle: int8 weights + scales in safetensors.

``torch.save`` of a quantised model pickles packed kernels (unsafe to load, tied to one torch build), and
``save_pretrained`` cannot store them at all. So the folder holds:

- ``model.int8.safetensors``: for each quantised module its integer weight (``<name>.weight``, int8 for
  Linear, uint8 for Embedding), ``<name>.weight.scale`` and ``<name>.weight.zero_point`` (per output
  channel / per row), and the bias; every other tensor (norms, ...) as it is;
- ``prunekit_quant.json``: the format, which modules are quantised and the float model's shapes manifest
  (:mod:`prunekit.io.shapes`: per-layer widths, low-rank ranks);
- ``config.json`` and the tokenizer.

:func:`load_int8` (reached through :func:`prunekit.load`) builds the float skeleton from config + shapes,
converts it with the same quantisation settings, then puts the saved integers and scales back exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from prunekit.errors import PrunekitError
from prunekit.io.atomic import atomic_output_dir, write_json_atomic
from prunekit.io.automap import drop_dangling_auto_map
from prunekit.io.damaged import names_damaged_file
from prunekit.io.documents import read_versioned_json
from prunekit.io.formats import register_format
from prunekit.io.shapes import build_skeleton, read_manifest
from prunekit.quant.int8 import SHAPES_ATTR, convert_int8, quiet_quantization

WEIGHTS = "model.int8.safetensors"
QUANT_MANIFEST = "prunekit_quant.json"
FORMAT, FORMAT_VERSION = "prunekit-int8-dynamic", 1


def _quantized_modules(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    from torch.ao.nn.quantized import Embedding as QEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, QLinear):
            out[name] = ("linear", m)
        elif isinstance(m, QEmbedding):
            out[name] = ("embedding", m)
    return out


def _qparams(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
        return (w.q_per_channel_scales().float(), w.q_per_channel_zero_points(),
                {"axis": int(w.q_per_channel_axis()), "per_channel": True})
    return (torch.tensor([w.q_scale()], dtype=torch.float32), torch.tensor([w.q_zero_point()]), {"per_channel": False})


def write_int8(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, folder: str | Path) -> dict[str, Any]:
    """Write a model from :func:`prunekit.quant.int8.quantize_int8` into ``folder``; returns the manifest."""
    folder = Path(folder)
    shapes = getattr(model, SHAPES_ATTR, None)
    if shapes is None:
        raise PrunekitError("save_int8 needs a model made by prunekit.quant.int8.quantize_int8 (shapes unknown)")
    quantized = _quantized_modules(model)
    if not quantized:
        raise PrunekitError("the model has no int8 modules to save")
    tensors: dict[str, torch.Tensor] = {}
    modules: dict[str, dict[str, Any]] = {}
    for name, (kind, m) in quantized.items():
        w = m.weight()
        scale, zero_point, info = _qparams(w)
        tensors[f"{name}.weight"] = w.int_repr().contiguous()
        tensors[f"{name}.weight.scale"] = scale.contiguous()
        tensors[f"{name}.weight.zero_point"] = zero_point.contiguous()
        bias = m.bias() if kind == "linear" else None
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach().contiguous()
        modules[name] = {"kind": kind, "dtype": str(w.dtype).removeprefix("torch."),
                         "qscheme": str(w.qscheme()).removeprefix("torch."), **info}
    prefixes = tuple(f"{n}." for n in quantized)
    seen: set[int] = set()
    for key, t in model.state_dict().items():
        if key.startswith(prefixes) or not isinstance(t, torch.Tensor) or t.is_quantized:
            continue
        if t.data_ptr() in seen:  # a tied alias: load_strict accepts the missing alias
            continue
        seen.add(t.data_ptr())
        tensors[key] = t.detach().contiguous()
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": FORMAT})
    model.config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    drop_dangling_auto_map(folder)
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "embeddings": any(k == "embedding" for k, _ in
                quantized.values()), "modules": modules, "shapes": shapes}
    write_json_atomic(folder / QUANT_MANIFEST, manifest)
    return manifest


def save_int8(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, out_dir: str | Path,
              force: bool = False) -> dict[str, Any]:
    """:func:`write_int8` into a folder that appears atomically."""
    with atomic_output_dir(out_dir, force) as tmp:
        return write_int8(model, tokenizer, tmp)


@names_damaged_file("folder")
def load_int8(folder: str | Path) -> nn.Module:
    """Rebuild a folder written by :func:`write_int8`, with bit-identical integer weights and scales."""
    folder = Path(folder).expanduser()
    info = read_versioned_json(folder / QUANT_MANIFEST, FORMAT, FORMAT_VERSION)
    if not (folder / WEIGHTS).is_file():
        raise PrunekitError(f"{folder} has {QUANT_MANIFEST} but no {WEIGHTS}")
    state = load_file(str(folder / WEIGHTS))
    model = build_skeleton(folder, read_manifest(folder, info["shapes"]))
    with torch.no_grad():
        for p in model.parameters():  # defined values for the observers; every weight is replaced below
            p.zero_()
    prefixes = tuple(f"{n}." for n in info["modules"])
    rest = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    missing, unexpected = model.load_state_dict(rest, strict=False)  # float tensors, before conversion
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in rest if k in params}
    missing = [k for k in missing if not k.startswith(prefixes) and not (k in params and id(params[k]) in loaded)]
    if missing or unexpected:
        raise PrunekitError(f"{folder}: weights and model disagree "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    convert_int8(model, embeddings=bool(info.get("embeddings")))
    quantized = _quantized_modules(model)
    if set(quantized) != set(info["modules"]):
        raise PrunekitError(f"{folder}: the rebuilt model's int8 modules differ from {QUANT_MANIFEST}")
    with quiet_quantization():
        for name, (kind, m) in quantized.items():
            _fill(m, kind, name, info["modules"][name], state, folder)
    setattr(model, SHAPES_ATTR, info["shapes"])
    return model.eval()


def _fill(m: nn.Module, kind: str, name: str, info: dict[str, Any], state: dict[str, torch.Tensor],
          folder: Path) -> None:
    try:
        ints, scale, zero_point = (state[f"{name}.weight{s}"] for s in ("", ".scale", ".zero_point"))
    except KeyError as err:
        raise PrunekitError(f"{folder}: {WEIGHTS} lacks {err.args[0]}") from err
    dtype = getattr(torch, info["dtype"])
    # Requantising the exact dequantised values with the same parameters gives back the same integers.
    if info.get("per_channel"):
        axis = int(info.get("axis", 0))
        shape = [1] * ints.dim()
        shape[axis] = -1
        real = (ints.float() - zero_point.float().reshape(shape)) * scale.reshape(shape)
        zp = zero_point if zero_point.is_floating_point() else zero_point.long()
        weight = torch.quantize_per_channel(real, scale.double() if kind == "linear" else scale, zp, axis, dtype)
    else:
        real = (ints.float() - float(zero_point.item())) * float(scale.item())
        weight = torch.quantize_per_tensor(real, float(scale.item()), int(zero_point.item()), dtype)
    if not torch.equal(weight.int_repr(), ints):
        raise PrunekitError(f"{folder}: int8 weights of {name} did not survive reloading")
    if kind == "linear":
        m.set_weight_bias(weight, state.get(f"{name}.bias"))
    else:
        m.set_weight(weight)


register_format("int8", lambda folder: (folder / QUANT_MANIFEST).is_file(),
                lambda folder, trust_remote_code: load_int8(folder), priority=30, looks_for=QUANT_MANIFEST)

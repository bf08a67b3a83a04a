"""Dynamic int8 quantisation with PyTorch's own eager-mode quantisation (``torch.ao.quantization``).

- **Linear** weights become int8, per output channel and symmetric (zero point 0), so a weight that
  pruning set to 0 is stored as exactly 0; activations are quantised on the fly per batch, which is
  why no calibration data is needed.
- **The token embedding** (optional, on by default) becomes uint8 per row with float scale and offset
  (PyTorch's ``float_qparams_weight_only_qconfig``): for a small encoder such as MiniLM they are half
  the parameters, so without them the checkpoint shrinks by far less than 4×.

The result runs on CPU only (fbgemm / qnnpack kernels). Save it with :func:`prunekit.quant.saved.save_int8`
and load it back with :func:`prunekit.load`. torch 2.10+ marks ``torch.ao.quantization`` deprecated
in favour of torchao; it still ships and works in torch 2.13, and its warnings are silenced here.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.io.shapes import shapes_manifest

#: attribute holding the float model's shapes manifest (prunekit.io.shapes), read by save_int8
SHAPES_ATTR = "prunekit_shapes"


@contextmanager
def quiet_quantization() -> Iterator[None]:
    """torch.ao.quantization warns on every call that it is deprecated; say it once in the docs instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*", category=UserWarning)
        yield


def qconfig_spec(model: nn.Module, embeddings: bool = True) -> dict[type[nn.Module] | str, object]:
    """Every Linear; with ``embeddings`` also the token embedding (the big one). Position and token-type
    tables are small and are looked up with expanded, non-contiguous index tensors, which the int8
    embedding kernel refuses, so they stay float."""
    from torch.ao.quantization import float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig

    spec: dict[type[nn.Module] | str, object] = {nn.Linear: per_channel_dynamic_qconfig}
    if embeddings and hasattr(model, "get_input_embeddings"):
        table = model.get_input_embeddings()
        name = next((n for n, m in model.named_modules() if m is table), None)
        if name and isinstance(table, nn.Embedding):
            spec[name] = float_qparams_weight_only_qconfig
    return spec


def _engine() -> None:
    engines = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine not in ("fbgemm", "x86", "qnnpack"):
        for name in ("x86", "fbgemm", "qnnpack"):
            if name in engines:
                torch.backends.quantized.engine = name
                return
        raise PrunekitError(f"this torch build has no int8 CPU kernels (engines: {engines})")


def convert_int8(model: nn.Module, embeddings: bool = True) -> nn.Module:
    """Swap modules for their dynamic-int8 versions in place (no shapes bookkeeping; see :func:`quantize_int8`)."""
    from torch.ao.quantization import quantize_dynamic

    _engine()
    with quiet_quantization():
        return quantize_dynamic(model, qconfig_spec(model, embeddings), dtype=torch.qint8, inplace=True)


def quantize_int8(model: nn.Module, embeddings: bool = True) -> nn.Module:
    """A dynamic-int8 copy of ``model`` (on CPU, eval mode); ``model`` itself is not changed.

    The float model's shapes manifest is attached to the copy first, so uneven pruned widths and
    low-rank layers can be rebuilt when it is reloaded."""
    if is_int8(model):
        raise PrunekitError("the model is already int8-quantised")
    float_model = copy.deepcopy(model).cpu().float().eval()
    try:
        manifest = shapes_manifest(float_model)
    except (PrunekitError, AttributeError) as err:
        raise PrunekitError(f"int8 saving needs a model family prunekit knows ({err})") from err
    quantized = convert_int8(float_model, embeddings)
    setattr(quantized, SHAPES_ATTR, manifest)
    return quantized


def is_int8(model: nn.Module) -> bool:
    """Does ``model`` contain dynamically quantised modules (and so can no longer be trained)?"""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())

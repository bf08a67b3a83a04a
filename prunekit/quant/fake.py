"""Per-channel symmetric b-bit fake quantisation, for studying the accuracy/size trade-off (b = 2…8).

For each output channel c (a row of a Linear weight W, out × in):

    q_max   = 2^(b−1) − 1                         (b = 8: 127, b = 4: 7, b = 2: 1)
    s_c     = max_j |W[c, j]| / q_max             (s_c = 1 when the row is all zeros)
    Q[c, j] = clamp(round(W[c, j] / s_c), −q_max, q_max)   an integer with b bits
    Ŵ[c, j] = s_c · Q[c, j]                       what the model computes with

The grid is symmetric with no zero-point, so 0 maps to exactly 0: pruned weights stay pruned. "Fake"
means Ŵ is stored back in float32; the model runs as before but with the values a real b-bit kernel
would see. :func:`fake_quant_size_bytes` is the size the same weights would need stored for real:
b bits per weight plus one float32 scale per channel, everything else as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prunekit.arch import prunable_modules
from prunekit.errors import PrunekitError

MIN_BITS, MAX_BITS = 2, 8


def check_bits(bits: int) -> int:
    """``bits``, or one clear error (recipes check it before any stage runs)."""
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise PrunekitError(f"fake quantisation bits must be an integer in {MIN_BITS}…{MAX_BITS}, got {bits!r}")
    return bits


def fake_quantize_tensor(weight: Tensor, bits: int) -> Tensor:
    """Ŵ for one weight matrix (rows = output channels), per the formula in the module docstring."""
    q_max = 2 ** (check_bits(bits) - 1) - 1
    w = weight.detach()
    flat = w.reshape(w.shape[0], -1).float()
    scale = flat.abs().amax(dim=1, keepdim=True) / q_max
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(flat / scale), -q_max, q_max)
    return (q * scale).reshape(w.shape).to(w.dtype)


def fake_quantize(model: nn.Module, bits: int, prunable: str | None = None,
                  exclude: str | None = None) -> dict[str, int]:
    """Fake-quantise, in place, the weight of every chosen Linear (default: every Linear in the
    transformer blocks); returns ``{module name: number of weights}``."""
    check_bits(bits)
    done = {}
    with torch.no_grad():
        for name, module in prunable_modules(model, prunable, exclude).items():
            if not isinstance(module, nn.Linear):
                continue
            module.weight.copy_(fake_quantize_tensor(module.weight, bits))
            done[name] = module.weight.numel()
    if not done:
        raise PrunekitError("no Linear layers to fake-quantise (check prunable / exclude)")
    return done


def fake_quant_size_bytes(model: nn.Module, quantized: dict[str, int], bits: int) -> int:
    """Bytes the model would take with the ``quantized`` modules' weights stored in ``bits`` bits (plus a
    float32 scale per output channel) and every other tensor as it is; tied tensors counted once."""
    quantized_weights = {f"{name}.weight" for name in quantized}
    seen: set[int] = set()
    total = 0
    for key, t in model.state_dict(keep_vars=True).items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        if key in quantized_weights:
            total += (t.numel() * bits + 7) // 8 + t.shape[0] * 4
        else:
            total += t.numel() * t.element_size()
    return total

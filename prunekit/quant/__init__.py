"""Making a (pruned) model smaller after pruning: int8, b-bit fake quantisation, low-rank factorisation.

- :mod:`~prunekit.quant.int8` and :mod:`~prunekit.quant.saved`: PyTorch dynamic int8, saved without pickle;
- :mod:`~prunekit.quant.onnx_static`: static int8 with calibration through ONNX Runtime;
- :mod:`~prunekit.quant.fake`: per-channel symmetric b-bit fake quantisation (b = 2…8);
- :mod:`~prunekit.quant.lowrank`: SVD factorisation of Linear layers.

Every scheme here is symmetric for weights, so pruned zeros stay exactly zero.
"""

from prunekit.quant.fake import fake_quant_size_bytes, fake_quantize, fake_quantize_tensor
from prunekit.quant.int8 import is_int8, quantize_int8
from prunekit.quant.lowrank import LowRankLinear, LowRankSettings, low_rank_factorize
from prunekit.quant.saved import load_int8, save_int8, write_int8

__all__ = [
    "LowRankLinear",
    "LowRankSettings",
    "fake_quant_size_bytes",
    "fake_quantize",
    "fake_quantize_tensor",
    "is_int8",
    "load_int8",
    "low_rank_factorize",
    "quantize_int8",
    "save_int8",
    "write_int8",
]

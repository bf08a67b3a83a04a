"""Static int8 through ONNX Runtime: export (checked against torch), calibrate on real batches, quantise.

Static quantisation fixes every activation's int8 range ahead of time from calibration data, so
inference needs no run-time range computation (unlike dynamic int8). The steps:

1. :func:`prunekit.io.onnx.export_onnx` writes the float graph and checks it against torch;
2. ``onnxruntime.quantization.quant_pre_process`` runs shape inference and graph fusion;
3. ``onnxruntime.quantization.quantize_static`` calibrates activation ranges (min/max) on real
   validation batches through a ``CalibrationDataReader``, then writes a QDQ graph with int8 weights
   (per channel, symmetric: zeros stay zeros) and uint8 activations, for MatMul/Gemm and the
   token-embedding lookup (``Gather``, most of a small encoder's size) only: norms, softmax and
   residual adds stay float, since their outliers cost accuracy for little speed.

:func:`evaluate_onnx` measures the result on a split with the same metrics as torch models, and
:func:`prunekit.io.onnx.onnx_latency` times it with the same loop as torch latency.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from prunekit.errors import PrunekitError, first_line
from prunekit.io.onnx import export_onnx, onnx_session
from prunekit.report.metrics import classification_metrics
from prunekit.tasks.base import length_sorted_batches
from prunekit.tasks.classification import EncodedSplit, make_loader

#: only the ops that carry weights or big products: quantising norms, softmax and residual adds as
#: well costs accuracy (their activations have outliers) for little speed
OP_TYPES = ("MatMul", "Gemm", "Gather")


def calibration_feeds(data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batches: int, batch_size: int = 32,
                      seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``batches`` real batches of ``data`` (shuffled, seeded) as numpy feeds, labels dropped."""
    loader = make_loader(data, tokenizer, batch_size, shuffle=True, seed=seed + 104729)
    feeds = []
    for batch in loader:
        feeds.append({k: v.numpy().astype(np.int64) for k, v in batch.items() if k != "labels"})
        if len(feeds) >= batches:
            break
    if not feeds:
        raise PrunekitError("static quantisation needs calibration data, and the split is empty")
    return feeds


def quantize_onnx_static(onnx_path: str | Path, out_path: str | Path, feeds: Iterable[dict[str, np.ndarray]], *,
                         per_channel: bool = True) -> dict[str, Any]:
    """Static int8 of the float graph ``onnx_path`` into ``out_path``, calibrated on ``feeds``.

    Returns ``{"path", "size_bytes", "calibration_batches"}``."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise PrunekitError("static int8 needs onnxruntime: pip install 'prunekit[onnx]'") from err

    session = onnx_session(onnx_path, threads=1)
    wanted = [i.name for i in session.get_inputs()]
    feeds = [{n: f[n] for n in wanted if n in f} for f in feeds]
    missing = sorted(set(wanted) - set(feeds[0])) if feeds else wanted
    if missing:
        raise PrunekitError(f"calibration batches lack the graph inputs {missing}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the raw graph instead
            pre = Path(onnx_path)
        staged = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                str(pre), str(staged), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(OP_TYPES),
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        except Exception as err:  # noqa: BLE001 - onnxruntime raises many types; one clear line
            raise PrunekitError(f"onnxruntime static quantisation failed: {first_line(err)}") from err
        staged.replace(out)
    return {"path": str(out), "size_bytes": out.stat().st_size, "calibration_batches": len(feeds)}


def export_static_int8(model_dir: str | Path, out_path: str | Path, data: EncodedSplit,
                       tokenizer: PreTrainedTokenizerBase, *, calib_batches: int = 16, batch_size: int = 32,
                       seed: int = 0, seq_len: int = 64, force: bool = False) -> dict[str, Any]:
    """Export the saved model in ``model_dir`` to float ONNX (checked), then static-int8 it into ``out_path``."""
    out = Path(out_path).expanduser()
    if out.exists() and not force:
        raise PrunekitError(f"{out} exists; pass force to replace it")
    float_path = out.with_name(out.stem + ".fp32.onnx")
    exported = export_onnx(model_dir, float_path, seq_len=seq_len, force=True)
    result = quantize_onnx_static(float_path, out, calibration_feeds(data, tokenizer, calib_batches, batch_size, seed))
    return {**result, "float_path": str(float_path), "float_size_bytes": exported["size_bytes"],
            "export_max_abs_diff": exported["max_abs_diff"]}


def predict_onnx(path: str | Path, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 64) -> np.ndarray:
    """Logits of the ONNX classifier ``path`` for every example, in the split's order."""
    session = onnx_session(path)
    wanted = [i.name for i in session.get_inputs()]
    collate = DataCollatorWithPadding(tokenizer)
    logits: np.ndarray | None = None
    for idx in length_sorted_batches(data, batch_size):
        batch = collate([data.features[i] for i in idx])
        out = session.run(None, {n: batch[n].numpy().astype(np.int64) for n in wanted})[0]
        if logits is None:
            logits = np.zeros((len(data), out.shape[-1]), dtype=np.float32)
        logits[idx] = out
    return logits if logits is not None else np.zeros((0, 0), dtype=np.float32)


def evaluate_onnx(path: str | Path, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                  batch_size: int = 64) -> tuple[dict[str, float], np.ndarray]:
    """The same metrics as :func:`prunekit.tasks.classification.evaluate`, from onnxruntime."""
    logits = predict_onnx(path, data, tokenizer, batch_size)
    labels = np.asarray(data.labels)
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())
    return classification_metrics(labels, logits.argmax(-1), loss), logits
